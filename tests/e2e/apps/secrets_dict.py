"""Test app for tests/e2e/test_secrets.py: a function with a `Secret.from_dict` secret."""

import json
import os

import modal

app = modal.App("e2e-secrets-dict")

# The test scans the server's log for these values.
DICT_VALUES = {"E2E_DICT_TOKEN": "dict-value-5c0ffee1d", "E2E_DICT_OTHER": "dict-other-9ab7e33"}


@app.function(secrets=[modal.Secret.from_dict(DICT_VALUES)], scaledown_window=2)
def read_env(keys: list[str]) -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in keys}


@app.local_entrypoint()
def main() -> None:
    print("RESULT " + json.dumps(read_env.remote([*DICT_VALUES, "E2E_NOT_SET"])), flush=True)
