"""Test client for tests/e2e/test_secrets.py: secret look-ups and mistakes through the Python API.

Usage: secrets_client.py errors NAME BAD_VALUE | standalone
Prints one `RESULT <json>` line with the outcome of each attempt.
"""

import json
import sys

import modal


def outcome(action: object) -> dict[str, str]:
    try:
        action()  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the test inspects the type and message
        return {"type": type(exc).__name__, "message": str(exc)}
    return {"type": "none", "message": ""}


def run_app_with_bad_key(bad_value: str) -> None:
    app = modal.App("e2e-secrets-bad-key")

    @app.function(secrets=[modal.Secret.from_dict({"bad-key": bad_value})], serialized=True)
    def never_runs() -> None:
        pass

    with app.run():
        pass


def errors(name: str, bad_value: str) -> dict[str, dict[str, str]]:
    return {
        "existing": outcome(lambda: modal.Secret.from_name(name).hydrate()),
        "missing": outcome(lambda: modal.Secret.from_name(name + "-missing").hydrate()),
        "missing_key": outcome(
            lambda: modal.Secret.from_name(name, required_keys=["E2E_NO_SUCH_KEY"]).hydrate()
        ),
        "bad_key": outcome(lambda: run_app_with_bad_key(bad_value)),
    }


def standalone() -> dict[str, dict[str, str]]:
    # Outside any app (as for a sandbox) the client asks the server for an ephemeral secret.
    secret = modal.Secret.from_dict({"E2E_STANDALONE": "standalone-9f1"})
    return {"standalone": outcome(lambda: secret.hydrate())}


if __name__ == "__main__":
    if sys.argv[1] == "errors":
        result = errors(sys.argv[2], sys.argv[3])
    else:
        result = standalone()
    print("RESULT " + json.dumps(result), flush=True)
