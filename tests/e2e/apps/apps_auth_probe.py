"""Test app for tests/e2e/test_auth.py: a container whose credential the test replays against another app.

`credential` hands the container's own credential to the test; `lookup_other` uses the client inside the
container (which sends that credential) to look up and call a function of another app.
"""

import os

import modal

app = modal.App("e2e-auth-probe")


@app.function(scaledown_window=60, timeout=30)
def credential() -> dict[str, str]:
    return {
        "task_id": os.environ.get("MODAL_TASK_ID", ""),
        "headers": os.environ.get("MODAL_OVERRIDE_HEADERS", ""),
    }


@app.function(scaledown_window=60, timeout=30)
def lookup_other(victim_app: str) -> str:
    try:
        modal.Function.from_name(victim_app, "hello").remote("from-probe")
    except Exception as exc:  # noqa: BLE001 - the test inspects the type
        return type(exc).__name__
    return "ok"
