"""Test app for tests/e2e/test_apps.py: an ephemeral run whose container writes to stdout and stderr,
records its pid in a file, and may sleep so the test can disconnect or kill the client meanwhile."""

import os
import sys
import time

import modal

app = modal.App("e2e-apps-ephemeral")


# A long scaledown window: a container gone soon after the run was ended by its app's stop.
@app.function(scaledown_window=60)
def work(pid_file: str, marker: str, sleep: float) -> int:
    print(f"STDOUT-{marker}", flush=True)
    print(f"STDERR-{marker}", file=sys.stderr, flush=True)
    tmp = pid_file + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(tmp, pid_file)
    time.sleep(sleep)
    return os.getpid()


@app.local_entrypoint()
def main(pid_file: str, marker: str, sleep: float = 0.0) -> None:
    print(f"RESULT {work.remote(pid_file, marker, sleep)}", flush=True)
