"""Warm reuse and scaledown: two calls share a container, which stops after its scaledown window."""

import json
import os
import subprocess
import sys
import time

import modal

app = modal.App("onshore-test-runtime-warm")


@app.function(scaledown_window=2)
def task() -> str:
    return os.environ["MODAL_TASK_ID"]


def running(task_id: str) -> bool:
    """Whether the server lists the container as running (`modal container list`)."""
    argv = [sys.executable, "-m", "modal", "container", "list", "--json"]
    listing = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return any(task_id in json.dumps(row) for row in json.loads(listing))


@app.local_entrypoint()
def main() -> None:
    first = task.remote()
    second = task.remote()
    print(f"TASKS {first} {second}")
    print(f"RUNNING_AFTER_CALLS {running(first)}")
    # The app stays running (this entrypoint sleeps) while the idle container waits out its window.
    start = time.monotonic()
    while running(first) and time.monotonic() - start < 15:
        time.sleep(0.1)
    print(f"GONE_AFTER {time.monotonic() - start:.2f} {not running(first)}")
    print(f"NEW_TASK {task.remote()}")
