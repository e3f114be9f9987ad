"""Secrets end to end: from_dict, from_dotenv, from_name, the `modal secret` commands; values stay secret."""

from __future__ import annotations

import importlib.util
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Result, ServerProcess, run_modal, run_python

APPS = REPO / "tests" / "e2e" / "apps"
DICT_APP = APPS / "secrets_dict.py"
NAMED_APP = APPS / "secrets_named.py"
DOTENV_APP = APPS / "secrets_dotenv.py"
CLIENT = APPS / "secrets_client.py"

# The values secrets_dict.py puts in its Secret.from_dict.
DICT_VALUES = {"E2E_DICT_TOKEN": "dict-value-5c0ffee1d", "E2E_DICT_OTHER": "dict-other-9ab7e33"}


def result_of(output: str) -> Any:
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT line in output:\n{output}"
    return json.loads(lines[-1][len("RESULT ") :])


def secret_value(tag: str) -> str:
    """A value that appears nowhere else, so finding it anywhere means it leaked from here."""
    return f"sv-{tag}-{uuid.uuid4().hex}"


def run_named(server: ServerProcess, name: str, keys: list[str]) -> Result:
    return run_modal(
        server, "run", str(NAMED_APP), "--keys", ",".join(keys), env=server.env(E2E_SECRET_NAME=name)
    )


def secret_names(server: ServerProcess) -> list[str]:
    result = run_modal(server, "secret", "list", "--json")
    assert result.returncode == 0, result.output
    return [row["name"] for row in json.loads(result.stdout)]


def test_from_dict_secret_is_injected_as_env_vars(server: ServerProcess) -> None:
    result = run_modal(server, "run", str(DICT_APP))
    assert result.returncode == 0, result.output
    assert result_of(result.stdout) == {**DICT_VALUES, "E2E_NOT_SET": None}


def test_from_dotenv_secret_is_injected_as_env_vars(server: ServerProcess, tmp_path: Path) -> None:
    if importlib.util.find_spec("dotenv") is None:
        pytest.skip("Secret.from_dotenv needs python-dotenv in the client's environment")
    app = tmp_path / "secrets_dotenv.py"
    shutil.copy(DOTENV_APP, app)
    first, second = secret_value("dotenv1"), secret_value("dotenv2")
    (tmp_path / ".env").write_text(f"E2E_DOTENV_A={first}\nE2E_DOTENV_B='{second}'\n")
    result = run_modal(server, "run", str(app), "--keys", "E2E_DOTENV_A,E2E_DOTENV_B,E2E_NOT_SET")
    assert result.returncode == 0, result.output
    assert result_of(result.stdout) == {"E2E_DOTENV_A": first, "E2E_DOTENV_B": second, "E2E_NOT_SET": None}


def test_secret_cli_create_use_overwrite_and_delete(server: ServerProcess) -> None:
    name = "e2e-secrets-cli"
    value, other, newer = secret_value("cli1"), secret_value("cli2"), secret_value("cli3")
    created = run_modal(server, "secret", "create", name, f"E2E_CLI_A={value}", f"E2E_CLI_B={other}")
    assert created.returncode == 0, created.output

    # Secret.from_name injects the named secret's values.
    used = run_named(server, name, ["E2E_CLI_A", "E2E_CLI_B"])
    assert used.returncode == 0, used.output
    assert result_of(used.stdout) == {"E2E_CLI_A": value, "E2E_CLI_B": other}

    # A second create without --force is refused; with --force it replaces the values.
    again = run_modal(server, "secret", "create", name, f"E2E_CLI_A={newer}")
    assert again.returncode != 0
    assert "already exists" in again.output
    forced = run_modal(server, "secret", "create", name, f"E2E_CLI_A={newer}", "--force")
    assert forced.returncode == 0, forced.output
    used = run_named(server, name, ["E2E_CLI_A", "E2E_CLI_B"])
    assert used.returncode == 0, used.output
    assert result_of(used.stdout) == {"E2E_CLI_A": newer, "E2E_CLI_B": None}

    deleted = run_modal(server, "secret", "delete", name, "--yes")
    assert deleted.returncode == 0, deleted.output
    # Once deleted, an app that needs it fails, naming it.
    gone = run_named(server, name, ["E2E_CLI_A"])
    assert gone.returncode != 0
    assert name in gone.output
    assert newer not in gone.output
    # Deleting it again is an error, unless missing is allowed.
    twice = run_modal(server, "secret", "delete", name, "--yes")
    assert twice.returncode != 0
    assert "not found" in twice.output.lower()
    allowed = run_modal(server, "secret", "delete", name, "--yes", "--allow-missing")
    assert allowed.returncode == 0, allowed.output


def test_secret_list_shows_named_secrets(server: ServerProcess) -> None:
    name = "e2e-secrets-list"
    created = run_modal(server, "secret", "create", name, f"E2E_LIST={secret_value('list')}")
    assert created.returncode == 0, created.output
    result = run_modal(server, "secret", "list", "--json")
    assert result.returncode == 0, result.output
    rows = json.loads(result.stdout)
    mine = [row for row in rows if row["name"] == name]
    assert mine, f"`modal secret list` does not name secret {name!r}: {rows}"
    assert mine[0]["created_at"], mine

    deleted = run_modal(server, "secret", "delete", name, "--yes")
    assert deleted.returncode == 0, deleted.output
    assert name not in secret_names(server)


def test_secret_values_never_reach_server_log_or_errors(fresh_server: ServerProcess) -> None:
    # A verbose server logs the most; still no value may appear in its log.
    server = fresh_server
    server.extra_args.append("-v")
    server.start()
    name = "e2e-secrets-leak"
    value, bad_value = secret_value("leak"), secret_value("bad")
    created = run_modal(server, "secret", "create", name, f"E2E_LEAK={value}")
    assert created.returncode == 0, created.output
    assert value not in created.output  # the CLI echoes the keys, not the values

    used = run_named(server, name, ["E2E_LEAK"])
    assert used.returncode == 0, used.output
    assert result_of(used.stdout) == {"E2E_LEAK": value}
    from_dict = run_modal(server, "run", str(DICT_APP))
    assert from_dict.returncode == 0, from_dict.output

    errors = run_python(server, CLIENT, "errors", name, bad_value)
    assert errors.returncode == 0, errors.output
    outcome = result_of(errors.stdout)
    assert outcome["existing"]["type"] == "none", outcome
    assert outcome["missing"]["type"] == "NotFoundError", outcome
    assert f"{name}-missing" in outcome["missing"]["message"]
    assert outcome["missing_key"]["type"] == "NotFoundError", outcome
    assert "E2E_NO_SUCH_KEY" in outcome["missing_key"]["message"]
    assert outcome["bad_key"]["type"] == "InvalidError", outcome
    assert "bad-key" in outcome["bad_key"]["message"]
    assert value not in errors.output and bad_value not in errors.output

    bad_cli = run_modal(server, "secret", "create", "e2e-secrets-bad", f"bad-key={bad_value}")
    assert bad_cli.returncode != 0
    assert "bad-key" in bad_cli.output
    assert bad_value not in bad_cli.output

    log = server.log_text()
    assert log, "the server wrote no log at all"
    leaked = [n for n, secret in enumerate((value, bad_value, *DICT_VALUES.values())) if secret in log]
    assert not leaked, f"secret values (numbers {leaked}) appear in the server's log"


def test_standalone_from_dict_secret_hydrates(server: ServerProcess) -> None:
    # Secret.from_dict(...) outside any app (e.g. for a sandbox) asks for an ephemeral secret.
    result = run_python(server, CLIENT, "standalone")
    assert result.returncode == 0, result.output
    assert result_of(result.stdout)["standalone"] == {"type": "none", "message": ""}
