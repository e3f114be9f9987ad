"""State across a server restart: deployed apps, spawned calls and their results live in the data dir."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, run_modal, run_python, write_app

APP_FILE = Path(__file__).resolve().parent / "apps" / "state_app.py"
APP_NAME = "onshore-test-state"
SQLITE_MAGIC = b"SQLite format 3\x00"


def _line(output: str, prefix: str) -> str:
    for line in output.splitlines():
        if line.startswith(prefix + " "):
            return line[len(prefix) + 1 :].strip()
    raise AssertionError(f"no line starting with {prefix!r} in output:\n{output}")


def _client(server: ServerProcess, directory: Path, name: str, body: str) -> str:
    """Run a client script (the real client's Python API) against the server; return its output."""
    script = write_app(directory, name, "import modal\n\n" + body)
    result = run_python(server, script)
    assert result.returncode == 0, f"{result.output}\n--- server log ---\n{server.log_text()[-3000:]}"
    return result.output


@pytest.fixture
def restart(fresh_server: ServerProcess) -> Iterator[Callable[[], ServerProcess]]:
    """Stop the test's server and start a new one on the same data dir (stopped at the end of the test)."""
    started: list[ServerProcess] = []

    def go() -> ServerProcess:
        fresh_server.stop()
        new = ServerProcess(fresh_server.data_dir).start()
        started.append(new)
        return new

    yield go
    for proc in started:
        proc.stop()


@pytest.fixture
def deployed(fresh_server: ServerProcess) -> ServerProcess:
    fresh_server.start()
    result = run_modal(fresh_server, "deploy", str(APP_FILE))
    assert result.returncode == 0, result.output
    return fresh_server


def test_deployed_app_answers_after_restart(
    deployed: ServerProcess, restart: Callable[[], ServerProcess], tmp_path: Path
) -> None:
    call = f"print('VALUE', modal.Function.from_name({APP_NAME!r}, 'square').remote(7))\n"
    assert _line(_client(deployed, tmp_path, "before.py", call), "VALUE") == "49"
    after = restart()
    assert _line(_client(after, tmp_path, "after.py", call), "VALUE") == "49"
    # The deployment is listed as deployed, not stopped like an ephemeral app would be.
    listed = run_modal(after, "app", "list", "--json")
    assert listed.returncode == 0, listed.output
    states = {a["description"]: a["state"] for a in json.loads(listed.stdout)}
    assert states.get(APP_NAME) == "deployed", listed.output


def test_data_dir_holds_sqlite_in_wal_mode(
    deployed: ServerProcess, restart: Callable[[], ServerProcess]
) -> None:
    after = restart()
    databases = [
        p
        for p in after.data_dir.rglob("*")
        if p.is_file() and p.read_bytes()[: len(SQLITE_MAGIC)] == SQLITE_MAGIC
    ]
    assert databases, (
        f"no SQLite file in {after.data_dir}: {sorted(p.name for p in after.data_dir.rglob('*'))}"
    )
    db = databases[0]
    # Bytes 18 and 19 of the header are the read and write format versions: 2 means WAL.
    assert db.read_bytes()[18:20] == b"\x02\x02", f"{db} is not in WAL mode"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    finally:
        conn.close()


def test_finished_spawned_call_is_fetchable_after_restart(
    deployed: ServerProcess, restart: Callable[[], ServerProcess], tmp_path: Path
) -> None:
    out = _client(
        deployed,
        tmp_path,
        "spawn.py",
        f"call = modal.Function.from_name({APP_NAME!r}, 'square').spawn(6)\n"
        "print('ID', call.object_id)\n"
        "print('VALUE', call.get(timeout=60))\n",
    )
    call_id = _line(out, "ID")
    assert _line(out, "VALUE") == "36"
    after = restart()
    out = _client(
        after,
        tmp_path,
        "fetch.py",
        f"print('VALUE', modal.FunctionCall.from_id({call_id!r}).get(timeout=30))\n",
    )
    assert _line(out, "VALUE") == "36"


def test_unfinished_spawned_call_runs_again_after_restart(
    deployed: ServerProcess, restart: Callable[[], ServerProcess], tmp_path: Path
) -> None:
    before = set(deployed.container_pids())
    slow_until = time.time() + 6.0
    out = _client(
        deployed,
        tmp_path,
        "spawn.py",
        f"call = modal.Function.from_name({APP_NAME!r}, 'slow_first_time').spawn({slow_until!r})\n"
        "print('ID', call.object_id)\n",
    )
    call_id = _line(out, "ID")
    first = deployed.wait_new_container(before, 30)
    assert first, f"the spawned call never started\n{deployed.log_text()[-3000:]}"
    # The server stops while the call's first attempt is still running (it waits 120 s once it started
    # before slow_until); the attempt after the restart starts after slow_until and finishes at once.
    time.sleep(max(0.0, slow_until - time.time()) + 0.2)
    after = restart()
    out = _client(
        after,
        tmp_path,
        "fetch.py",
        f"print('VALUE', modal.FunctionCall.from_id({call_id!r}).get(timeout=60))\n",
    )
    value = _line(out, "VALUE")
    assert value.startswith("finished a later attempt in ta-"), after.log_text()[-3000:]
    assert value.split()[-1] != first[0], "the second attempt ran in a new container"
