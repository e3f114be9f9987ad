"""Test app for tests/e2e/test_secrets.py: a function with a `Secret.from_dotenv` secret.

The test copies this file into a folder of its own and writes a .env file beside it.
"""

import json
import os

import modal

app = modal.App("e2e-secrets-dotenv")


@app.function(secrets=[modal.Secret.from_dotenv(__file__)], scaledown_window=2)
def read_env(keys: list[str]) -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in keys}


@app.local_entrypoint()
def main(keys: str) -> None:
    print("RESULT " + json.dumps(read_env.remote(keys.split(","))), flush=True)
