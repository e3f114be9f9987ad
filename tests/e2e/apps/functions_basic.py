"""Test app for tests/e2e/test_functions.py: plain, generator, async and failing functions; entrypoints."""

import json
import os
import time

import modal

app = modal.App("e2e-functions-basic")


def emit(tag: str, value: object) -> None:
    """Print one result line that the test parses: `RESULT <tag> <json>`."""
    print(f"RESULT {tag} {json.dumps(value)}", flush=True)


@app.function(scaledown_window=2)
def square(x: int) -> int:
    return x * x


@app.function(scaledown_window=2)
def where() -> dict[str, object]:
    return {"remote": os.environ.get("MODAL_IS_REMOTE") == "1", "pid": os.getpid()}


@app.function(scaledown_window=2)
def add(a: int, b: int) -> int:
    return a + b


@app.function(scaledown_window=2, max_containers=1)
@modal.concurrent(max_inputs=8)
def slow_square(x: int, n: int) -> dict[str, float]:
    # Inputs run side by side and later ones finish first, so outputs arrive out of order
    # unless the client puts them back in input order.
    time.sleep(0.3 * (n - x))
    return {"square": x * x, "done_at": time.time()}


@app.function(scaledown_window=2)
def record(x: int, tag: str) -> None:
    print(f"for_each {tag} saw {x}", flush=True)


@app.function(scaledown_window=2)
def countdown(n: int):
    yield from range(n, 0, -1)


@app.function(scaledown_window=2)
async def async_double(x: int) -> int:
    import asyncio

    await asyncio.sleep(0.01)
    return 2 * x


@app.function(scaledown_window=2)
def fail_on_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd input {x} rejected")
    return x


@app.function(scaledown_window=2)
def explode(code: int) -> int:
    raise KeyError(f"remote-boom-{code}")  # the test looks for this line in the traceback


@app.function(scaledown_window=2)
def echo_bytes(data: bytes) -> bytes:
    # Reverse so the result differs from the argument and cannot be an echo of the request by mistake.
    return data[::-1]


@app.local_entrypoint()
def remote_local() -> None:
    emit("square_remote", square.remote(7))
    emit("square_local", square.local(5))
    emit("where_remote", where.remote())
    emit("where_local", where.local())
    emit("local_pid", os.getpid())


@app.local_entrypoint()
def mapping() -> None:
    n = 6
    emit("map_ordered", list(slow_square.map(range(n), kwargs={"n": n})))
    unordered = slow_square.map(range(n), kwargs={"n": n}, order_outputs=False)
    emit("map_unordered", [r["square"] for r in unordered])
    emit("map_two_iterables", list(add.map([1, 2, 3], [10, 20, 30])))
    emit("starmap", list(add.starmap([(1, 2), (3, 4), (5, 6)])))


@app.local_entrypoint()
def for_each(tag: str) -> None:
    record.for_each(range(4), kwargs={"tag": tag})
    emit("for_each_done", True)


@app.local_entrypoint()
def spawning() -> None:
    call = square.spawn(12)
    emit("call_id", call.object_id)
    emit("spawn_get", call.get(timeout=60))
    # A second handle from the id reads the same result.
    emit("from_id_get", modal.FunctionCall.from_id(call.object_id).get(timeout=60))


@app.local_entrypoint()
def generators() -> None:
    emit("remote_gen", list(countdown.remote_gen(4)))


@app.local_entrypoint()
async def async_variants() -> None:
    emit("async_remote_aio", await async_double.remote.aio(21))
    emit("sync_fn_remote_aio", await square.remote.aio(9))
    emit("map_aio", [x async for x in async_double.map.aio(range(5))])
    emit("starmap_aio", [x async for x in add.starmap.aio([(1, 1), (2, 2)])])
    call = await square.spawn.aio(8)
    emit("spawn_aio_get", await call.get.aio(timeout=60))
    emit("remote_gen_aio", [x async for x in countdown.remote_gen.aio(3)])
    # .local of an async function gives a coroutine, run here in the caller's own event loop.
    emit("async_fn_local", await async_double.local(5))


@app.local_entrypoint()
def return_exceptions() -> None:
    results = list(fail_on_odd.map(range(5), return_exceptions=True))
    emit(
        "return_exceptions",
        [
            {"type": type(r).__name__, "msg": str(r)} if isinstance(r, BaseException) else {"value": r}
            for r in results
        ],
    )


@app.local_entrypoint()
def remote_error() -> None:
    explode.remote(42)


@app.local_entrypoint()
def big_payload(size: int) -> None:
    import hashlib

    data = os.urandom(1024) * (size // 1024) + os.urandom(size % 1024)
    start = time.monotonic()
    out = echo_bytes.remote(data)
    emit("big_seconds", round(time.monotonic() - start, 2))
    emit("big_len", len(out))
    emit("big_ok", hashlib.sha256(out).digest() == hashlib.sha256(data[::-1]).digest())
