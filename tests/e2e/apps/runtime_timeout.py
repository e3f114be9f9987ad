"""A function that outruns its timeout."""

import os
import time

import modal

app = modal.App("onshore-test-runtime-timeout")


@app.function(timeout=2)
def slow() -> str:
    print(f"STARTED {os.environ['MODAL_TASK_ID']}", flush=True)
    time.sleep(10)
    return "finished"


@app.local_entrypoint()
def main() -> None:
    start = time.monotonic()
    try:
        value = slow.remote()
    except Exception as exc:
        print(f"ERROR {type(exc).__module__}.{type(exc).__name__}: {exc}")
    else:
        print(f"RESULT {value}")
    print(f"ELAPSED {time.monotonic() - start:.2f}")
