"""Spawn a slow call, keep working, and collect its result later (even from another process).

Run it with `onshore run examples/spawn_and_poll.py`.
"""

import time

import modal

app = modal.App("example-spawn-and-poll")


@app.function()
def slow_sum(n: int) -> int:
    time.sleep(2)
    return sum(range(n))


@app.local_entrypoint()
def main() -> None:
    call = slow_sum.spawn(1_000_000)
    # The call id can be stored and used later: modal.FunctionCall.from_id(call_id).get()
    print("spawned call", call.object_id)
    while True:
        try:
            result = call.get(timeout=0.5)
            break
        except TimeoutError:
            print("still running...")
    print("result:", result)
    same = modal.FunctionCall.from_id(call.object_id)
    print("fetched again by id:", same.get())
