"""Test app for tests/e2e/test_apps.py: an ephemeral run whose container writes to stdout and stderr,
returns its task id, and may sleep so the test can disconnect or kill the client meanwhile."""

import json
import os
import sys
import time

import modal

app = modal.App("e2e-apps-ephemeral")


# A long scaledown window: a container gone soon after the run was ended by its app's stop.
@app.function(scaledown_window=60)
def work(marker: str, sleep: float) -> str:
    print(f"STDOUT-{marker}", flush=True)
    print(f"STDERR-{marker}", file=sys.stderr, flush=True)
    time.sleep(sleep)
    return os.environ["MODAL_TASK_ID"]


@app.local_entrypoint()
def main(marker: str, sleep: float = 0.0) -> None:
    print(f"RESULT {json.dumps(work.remote(marker, sleep))}", flush=True)
