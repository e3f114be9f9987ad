"""Warm reuse and scaledown: two calls share a container, which stops after its scaledown window."""

import os
import time

import modal

app = modal.App("onshore-test-runtime-warm")


@app.function(scaledown_window=2)
def pid() -> int:
    return os.getpid()


def alive(p: int) -> bool:
    try:
        os.kill(p, 0)
    except ProcessLookupError:
        return False
    return True


@app.local_entrypoint()
def main() -> None:
    first = pid.remote()
    second = pid.remote()
    print(f"PIDS {first} {second}")
    print(f"ALIVE_AFTER_CALLS {alive(first)}")
    # The app stays running (this entrypoint sleeps) while the idle container waits out its window.
    start = time.monotonic()
    while alive(first) and time.monotonic() - start < 15:
        time.sleep(0.1)
    print(f"GONE_AFTER {time.monotonic() - start:.2f} {not alive(first)}")
    print(f"NEW_PID {pid.remote()}")
