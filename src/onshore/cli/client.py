"""`onshore run|deploy|serve`: make sure a server runs, then hand over to the modal client pointed at it."""

from __future__ import annotations

import os
import sys

from onshore.cli.embedded import CliError, RunningServer, ensure_server, log_path
from onshore.config import DataDir

CLIENT_COMMANDS = ("run", "deploy", "serve")


def client_env(data: DataDir, server: RunningServer) -> dict[str, str]:
    """This process's environment plus MODAL_SERVER_URL and the data dir's token, as `onshore env` prints."""
    token = data.read_json(data.token_file)
    if not token or "token_id" not in token or "token_secret" not in token:
        raise CliError(f"No usable token in {data.token_file}; create one with `onshore token create`")
    env = dict(os.environ)
    env["MODAL_SERVER_URL"] = server.url
    env["MODAL_TOKEN_ID"] = str(token["token_id"])
    env["MODAL_TOKEN_SECRET"] = str(token["token_secret"])
    return env


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(onshore's own leading options, everything after them for the modal client).

    Only `--data-dir D` / `--data-dir=D` and `-h` / `--help` placed right after the subcommand are Onshore's;
    the rest, options included (`onshore run --detach app.py`), goes to the client unchanged.
    """
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help") or arg.startswith("--data-dir="):
            i += 1
        elif arg == "--data-dir":
            i += 2
        elif arg == "--":
            return argv[:i], argv[i + 1 :]
        else:
            break
    return argv[: min(i, len(argv))], argv[i:]


def cmd_client(command: str, data: DataDir, modal_args: list[str]) -> int:
    """Start the server if needed, then exec `python -m modal COMMAND ARGS`, whose exit code is ours."""
    server, started = ensure_server(data)
    if started:
        print(
            f"Started an Onshore server at {server.url} (pid {server.pid}) for {data.root}; "
            f"log: {log_path(data)}; stop it with `onshore stop`",
            file=sys.stderr,
        )
    env = client_env(data, server)
    argv = [sys.executable, "-m", "modal", command, *modal_args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
