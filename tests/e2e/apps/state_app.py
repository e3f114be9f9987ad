"""A deployed app whose calls must outlive a server restart."""

import os
import time

import modal

app = modal.App("onshore-test-state")


@app.function()
def square(x: int) -> int:
    return x * x


@app.function(timeout=600)
def slow_first_time(slow_until: float) -> str:
    """An attempt that starts before `slow_until` waits (the server stops under it); a later one finishes.

    Containers share no writable files, so the clock tells the attempts apart: the test restarts the server
    only after `slow_until`, while the first attempt is still waiting.
    """
    if time.time() < slow_until:
        time.sleep(120)
        return "finished the first attempt"
    return f"finished a later attempt in {os.environ['MODAL_TASK_ID']}"
