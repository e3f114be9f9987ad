"""Container output on the docker runtime: a line written in pieces is one log entry, as on the process
runtime (the engine's log driver assembles lines)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from onshore.runtimes.docker import server_labels
from tests.conftest import ServerProcess, results, run_modal, write_app
from tests.docker.daemon import Dockerd
from tests.docker.test_docker_runtime import containers, docker_args

PIECES_APP = """
import json
import os
import subprocess
import sys
import time

import modal

app = modal.App("onshore-docker-pieces")


@app.function(scaledown_window=60)
def speak() -> str:
    for piece in ("one ", "line ", "in pieces"):
        sys.stderr.write(piece)
        sys.stderr.flush()
        time.sleep(0.01)
    sys.stderr.write("\\n")
    sys.stderr.flush()
    return os.environ["MODAL_TASK_ID"]


@app.local_entrypoint()
def main() -> None:
    task = speak.remote()
    time.sleep(1.0)
    done = subprocess.run(
        [sys.executable, "-m", "modal", "container", "logs", task, "--tail", "1"],
        capture_output=True,
        text=True,
    )
    print("RESULT tail", json.dumps(done.stdout.strip()))
"""


@pytest.fixture
def server(dockerd: Dockerd, base_image: str, tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data", docker_args(dockerd)).start()
    try:
        yield server
    finally:
        server.stop()
    left = containers(dockerd, server_labels(server.data_dir))
    assert not left, f"containers left behind: {[c['Names'] for c in left]}"


def test_output_written_in_pieces_is_one_log_entry(server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(tmp_path, "pieces_app.py", PIECES_APP)
    result = run_modal(server, "run", str(app), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.output
    assert results(result)["tail"] == "one line in pieces", result.output
