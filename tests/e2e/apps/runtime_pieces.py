"""A line written to stderr in pieces; the entrypoint prints what `modal container logs --tail 1` shows."""

import json
import os
import subprocess
import sys
import time

import modal

app = modal.App("onshore-test-pieces")


@app.function(scaledown_window=60)
def speak() -> str:
    for piece in ("one ", "line ", "in pieces"):
        sys.stderr.write(piece)
        sys.stderr.flush()
        time.sleep(0.01)
    sys.stderr.write("\n")
    sys.stderr.flush()
    return os.environ["MODAL_TASK_ID"]


@app.local_entrypoint()
def main() -> None:
    task = speak.remote()
    time.sleep(1.0)
    done = subprocess.run(
        [sys.executable, "-m", "modal", "container", "logs", task, "--tail", "1"],
        capture_output=True,
        text=True,
    )
    print("RESULT tail", json.dumps(done.stdout.strip()))
