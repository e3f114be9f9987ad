"""Test app for tests/e2e/test_apps.py: a deployed app; tests copy it, changing APP_NAME and VERSION."""

import os
import sys

import modal

APP_NAME = "e2e-apps-deployed"
VERSION = "v1"

app = modal.App(APP_NAME)


@app.function(scaledown_window=60)
def hello(name: str) -> str:
    print(f"OUTLOG-{VERSION}-{name}", flush=True)
    print(f"ERRLOG-{VERSION}-{name}", file=sys.stderr, flush=True)
    return f"{VERSION}:{name}"


@app.function(scaledown_window=60)
def task_id() -> str:
    return os.environ["MODAL_TASK_ID"]


@app.cls(scaledown_window=2)
class Greeter:
    @modal.method()
    def greet(self, who: str) -> str:
        return f"greet-{VERSION}:{who}"
