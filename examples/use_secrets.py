"""Secrets: environment variables injected into containers, never written to logs.

Run it with `onshore run examples/use_secrets.py`. For a named secret, first create one:
`modal secret create my-api-key API_KEY=...` (after `eval "$(onshore env)"`), then use
`modal.Secret.from_name("my-api-key")`.
"""

import os

import modal

app = modal.App("example-secrets")

# A secret defined in code; Secret.from_dotenv() and Secret.from_name("...") work the same way.
credentials = modal.Secret.from_dict({"SERVICE_TOKEN": "not-a-real-token"})


@app.function(secrets=[credentials])
def token_fingerprint() -> str:
    token = os.environ["SERVICE_TOKEN"]
    # Show only a harmless summary of the secret.
    return f"SERVICE_TOKEN is set ({len(token)} characters)"


@app.local_entrypoint()
def main() -> None:
    print(token_fingerprint.remote())
