"""Server-side retries in every map style: inputs that fail first and then succeed, and ones that never do."""

import json
import time

import modal

app = modal.App("onshore-test-retries")

RETRIES = modal.Retries(max_retries=2, initial_delay=1.0, backoff_coefficient=1.0)


# Containers share no writable files, so an input's first attempt is told apart by the clock: it runs before
# `deadline`, and its retry only after the retry delay (1 s), past it.
@app.function(retries=RETRIES)
def flaky(x: int, deadline: float) -> int:
    if time.time() < deadline:
        raise ValueError(f"too early for {x}")
    return x * 2


@app.function(retries=RETRIES)
def flaky_sum(x: int, y: int, deadline: float) -> int:
    if time.time() < deadline:
        raise ValueError(f"too early for {x} + {y}")
    return x + y


@app.function(retries=modal.Retries(max_retries=1, initial_delay=0.1))
def always_fails(x: int) -> int:
    raise ValueError(f"never {x}")


@app.local_entrypoint()
def main() -> None:
    def soon() -> float:
        return time.time() + 0.5

    out: dict[str, object] = {}
    out["map"] = list(flaky.map(range(5), kwargs={"deadline": soon()}))
    out["starmap"] = list(flaky_sum.starmap([(1, 2), (3, 4)], kwargs={"deadline": soon()}))
    flaky.for_each(range(3), kwargs={"deadline": soon()})
    out["for_each"] = "finished"
    flaky.spawn_map(range(2), kwargs={"deadline": soon()})
    call = flaky.experimental_spawn_map(range(4), kwargs={"deadline": soon()})
    out["spawn_map_iter"] = list(call.iter())
    out["spawn_map_get"] = call.get(index=2)
    out["spawn_map_num_inputs"] = modal.FunctionCall.from_id(call.object_id).num_inputs()
    errors = list(always_fails.map(range(3), return_exceptions=True))
    out["exhausted"] = [f"{type(e).__name__}: {e}" for e in errors]
    print("RESULT retries " + json.dumps(out), flush=True)
