"""Keeps containers alive (one busy with a spawned call, one warm and idle) for the server-shutdown test."""

import os
import subprocess
import time

import modal

app = modal.App("onshore-test-runtime-sigterm")


@app.function(scaledown_window=300)
def idle_task() -> str:
    return os.environ["MODAL_TASK_ID"]


@app.function(timeout=300)
def busy() -> str:
    # A child process too: stopping the container must end it as well.
    subprocess.Popen(["sleep", "300"])
    time.sleep(300)
    return "finished"
