"""Volumes under SIGKILL: the server, or the container, killed at random moments while a container commits
over and over. Every time, the volume must be exactly at one of its commits: each commit adds one file and
names it in latest.txt, so the files present must be f-0 .. f-<latest>, each one whole."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, results, run_modal, run_python, wait_for, write_app

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="volumes in containers are overlays the server mounts: it must run as root"
)

APP_NAME = "onshore-test-volume-crash"
VOLUME = "onshore-test-crash-vol"

CHURN_APP = f"""
import os

import modal

app = modal.App({APP_NAME!r})
vol = modal.Volume.from_name({VOLUME!r}, create_if_missing=True)


@app.function(volumes={{"/data": vol}}, timeout=600, max_containers=1)  # one writer at a time
def churn(rounds: int) -> int:
    start = int(open("/data/latest.txt").read()) + 1 if os.path.exists("/data/latest.txt") else 0
    for k in range(start, start + rounds):
        with open(f"/data/f-{{k}}.bin", "wb") as f:
            f.write(bytes([k % 256]) * (300_000 + k))
        with open("/data/latest.txt", "w") as f:
            f.write(str(k))
        vol.commit()
    return k


@app.function(volumes={{"/data": vol}})
def check() -> dict:
    # A container sees one commit of the volume, whatever is committed while it runs.
    names = os.listdir("/data")
    latest = int(open("/data/latest.txt").read()) if "latest.txt" in names else -1
    files = sorted(int(n[2:-4]) for n in names if n.startswith("f-"))
    whole = [k for k in files if open(f"/data/f-{{k}}.bin", "rb").read() == bytes([k % 256]) * (300_000 + k)]
    return {{"latest": latest, "files": files, "whole": whole}}
"""

SPAWN = f"""
import modal

print("RESULT call", '"' + modal.Function.from_name({APP_NAME!r}, "churn").spawn(10_000).object_id + '"')
"""

# The spawned churn call runs again after a restart, committing while this checks: the check runs in a
# container of its own, which sees one commit.
CHECK = f"""
import json

import modal

print("RESULT state", json.dumps(modal.Function.from_name({APP_NAME!r}, "check").remote()))
"""


def _wait_commit(server: ServerProcess, before: int) -> None:
    """Wait until the server has logged a commit beyond the `before` it had logged."""
    assert wait_for(lambda: server.log_text().count(": commit ") > before, 60), server.log_text()[-3000:]


def _check(server: ServerProcess, tmp_path: Path) -> int:
    """Assert the volume is at one of its commits; its latest.txt number."""
    done = run_python(server, write_app(tmp_path, "check.py", CHECK), timeout=120)
    assert done.returncode == 0, done.output
    state = results(done)["state"]
    assert state["files"] == list(range(state["latest"] + 1)), state  # exactly the files of one commit
    assert state["whole"] == state["files"], state  # none torn
    latest: int = state["latest"]
    return latest


def _spawn(server: ServerProcess, tmp_path: Path) -> None:
    done = run_python(server, write_app(tmp_path, "spawn.py", SPAWN), timeout=60)
    assert done.returncode == 0, done.output


def _deploy(server: ServerProcess, tmp_path: Path) -> None:
    done = run_modal(server, "deploy", str(write_app(tmp_path, "churn.py", CHURN_APP)), timeout=120)
    assert done.returncode == 0, done.output


def test_server_killed_mid_commit_leaves_the_last_commit(tmp_path: Path) -> None:
    rng = random.Random(7)
    server = ServerProcess(tmp_path / "data").start()
    try:
        _deploy(server, tmp_path)
        latest = -1
        for _ in range(5):
            commits = server.log_text().count(": commit ")
            _spawn(server, tmp_path)
            _wait_commit(server, commits)
            time.sleep(rng.uniform(0.2, 2.0))
            server.stop(signal.SIGKILL)
            server = ServerProcess(server.data_dir).start()
            now = _check(server, tmp_path)
            assert now >= latest, (now, latest)  # no commit that returned is lost
            latest = now
        assert latest >= 5, f"too few commits landed ({latest + 1}) to show anything"
    finally:
        server.stop()


def test_container_killed_mid_commit_leaves_the_last_commit(
    fresh_server: ServerProcess, tmp_path: Path
) -> None:
    rng = random.Random(11)
    server = fresh_server.start()
    _deploy(server, tmp_path)
    latest = -1
    killed_tasks: list[str] = []
    for _ in range(5):
        before = set(server.container_pids())
        _spawn(server, tmp_path)
        found = server.wait_new_container(before, 60)
        assert found is not None, server.log_text()[-3000:]
        _wait_commit(server, server.log_text().count(": commit "))
        time.sleep(rng.uniform(0.1, 1.5))
        try:
            os.kill(found[1], signal.SIGKILL)
        except ProcessLookupError:
            pass
        killed_tasks.append(found[0])
        killed = f"container {found[0]} was killed"
        assert wait_for(lambda: killed in server.log_text(), 30), found  # noqa: B023 (used at once)
        now = _check(server, tmp_path)
        assert now >= latest, (now, latest)
        latest = now
    assert latest >= 5, f"too few commits landed ({latest + 1}) to show anything"
    # The killed containers' mounts are gone from the host (the checks' containers may still be warm).
    mounts = server.data_dir / "volumes" / "mounts"
    assert wait_for(lambda: not [t for t in killed_tasks if (mounts / t).exists()], 10)
