"""A 500-input map with retries whose containers the fault tests kill while it runs."""

import json
import os
import time

import modal

app = modal.App("onshore-test-faults-map")


@app.function(retries=modal.Retries(max_retries=6, initial_delay=0.1, backoff_coefficient=1.0))
def work(x: int) -> list[object]:
    time.sleep(0.02)
    return [x, x * x, os.environ["MODAL_TASK_ID"]]


@app.local_entrypoint()
def main(n: int = 500) -> None:
    print("MAP STARTED", flush=True)
    rows = list(work.map(range(n)))
    print("RESULT rows " + json.dumps(rows), flush=True)
