"""Client for `scaling`: a burst of one-second calls on a cold function, batched against unbatched calls whose
cost is per call, and the first call of ten different functions one after another."""

from __future__ import annotations

import os
import sys
import time

import modal

app = modal.App("bench-scaling")

CALL_COST_S = 0.05  # what one call of `per_call` costs, whatever it is given


@app.function(scaledown_window=600)
def second(i: int) -> tuple[str, float]:
    started = time.time()
    time.sleep(1.0)
    return os.environ["MODAL_TASK_ID"], started


@app.function(max_containers=1)
def unbatched(x: int) -> int:
    time.sleep(CALL_COST_S)
    return x


@app.function(max_containers=1)
@modal.batched(max_batch_size=16, wait_ms=20)
def batched(xs: list[int]) -> list[int]:
    time.sleep(CALL_COST_S)
    return xs


# Ten functions, each its own containers.
@app.function(scaledown_window=2)
def f0(x: int) -> int:
    return x


@app.function(scaledown_window=2)
def f1(x: int) -> int:
    return x


@app.function(scaledown_window=2)
def f2(x: int) -> int:
    return x


@app.function(scaledown_window=2)
def f3(x: int) -> int:
    return x


@app.function(scaledown_window=2)
def f4(x: int) -> int:
    return x


@app.function(scaledown_window=2)
def f5(x: int) -> int:
    return x


@app.function(scaledown_window=2)
def f6(x: int) -> int:
    return x


@app.function(scaledown_window=2)
def f7(x: int) -> int:
    return x


@app.function(scaledown_window=2)
def f8(x: int) -> int:
    return x


@app.function(scaledown_window=2)
def f9(x: int) -> int:
    return x


FIRSTS = [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9]


def main() -> None:
    from _common import emit, wait_until_quiet

    burst, items = int(sys.argv[1]), int(sys.argv[2])
    with app.run():
        # First, on an empty server (the container limit is 8: later phases leave 8 warm containers).
        wait_until_quiet()
        firsts = []
        for i, fn in enumerate(FIRSTS):
            t0 = time.perf_counter()
            assert fn.remote(i) == i
            firsts.append(time.perf_counter() - t0)
        time.sleep(4)  # their containers go (a 2 s scaledown window): the burst finds the machine empty
        wait_until_quiet()
        called = time.time()
        handles = [second.spawn(i) for i in range(burst)]
        runs = [h.get() for h in handles]
        starts = sorted(s for _, s in runs)
        containers = len({task for task, _ in runs})
        wait_until_quiet()
        t0 = time.perf_counter()
        assert list(unbatched.map(range(items))) == list(range(items))
        unbatched_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert list(batched.map(range(items))) == list(range(items))
        batched_s = time.perf_counter() - t0
    emit(
        {
            "called_at": called,
            "starts": starts,
            "burst_containers": containers,
            "items": items,
            "unbatched_s": unbatched_s,
            "batched_s": batched_s,
            "first_calls_s": firsts,
        }
    )


if __name__ == "__main__":
    main()
