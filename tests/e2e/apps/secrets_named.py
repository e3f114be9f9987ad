"""Test app for tests/e2e/test_secrets.py: a function with a `Secret.from_name` secret made by the CLI.

The secret's name comes from the client's environment (E2E_SECRET_NAME); in the container the module is
imported again without it, where the name does not matter: the function's secrets are already resolved.
"""

import json
import os

import modal

app = modal.App("e2e-secrets-named")

SECRET_NAME = os.environ.get("E2E_SECRET_NAME", "e2e-secrets-unset")


@app.function(secrets=[modal.Secret.from_name(SECRET_NAME)], scaledown_window=2)
def read_env(keys: list[str]) -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in keys}


@app.local_entrypoint()
def main(keys: str) -> None:
    print("RESULT " + json.dumps(read_env.remote(keys.split(","))), flush=True)
