"""Test app for tests/e2e/test_container_cli.py: a deployed app with a warm container, and a slow function."""

import os
import sys
import time

import modal

app = modal.App("e2e-container-cli")


@app.function(min_containers=1, secrets=[modal.Secret.from_dict({"CLI_TEST_SECRET": "from-the-secret"})])
def keeper(marker: str) -> dict[str, str]:
    print(f"OUT-{marker}", flush=True)
    print(f"ERR-{marker}", file=sys.stderr, flush=True)
    return {"task_id": os.environ["MODAL_TASK_ID"], "cwd": os.getcwd()}


@app.function(scaledown_window=60)
def slow(marker: str, seconds: float) -> str:
    print(f"slow started {marker}", flush=True)
    time.sleep(seconds)
    return os.environ["MODAL_TASK_ID"]
