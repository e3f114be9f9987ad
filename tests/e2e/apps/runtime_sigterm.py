"""Keeps containers alive (one busy with a spawned call, one warm and idle) for the server-shutdown test."""

import os
import subprocess
import time

import modal

app = modal.App("onshore-test-runtime-sigterm")


@app.function(scaledown_window=300)
def idle_pid() -> int:
    return os.getpid()


@app.function(timeout=300)
def busy(ready_file: str) -> str:
    # A child process too: stopping the container must end it as well.
    child = subprocess.Popen(["sleep", "300"])
    with open(ready_file, "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    time.sleep(300)
    return "finished"
