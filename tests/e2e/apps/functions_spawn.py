"""Test app for tests/e2e/test_functions.py: a deployed function whose spawned calls outlive the spawner."""

import os
import time

import modal

app = modal.App("e2e-functions-spawn")


@app.function(scaledown_window=2)
def slow_cube(x: int, delay: float) -> dict[str, float]:
    # Still running when the spawning process has already exited.
    time.sleep(delay)
    return {"cube": x**3, "done_at": time.time(), "pid": os.getpid()}
