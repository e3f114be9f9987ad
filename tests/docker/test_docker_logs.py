"""Container output on the docker runtime: a line written in pieces is one log entry, as on the process
runtime (the engine's log driver assembles lines)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, ServerProcess, results, run_modal
from tests.docker.daemon import Dockerd
from tests.docker.servers import docker_server

PIECES_APP = REPO / "tests" / "e2e" / "apps" / "runtime_pieces.py"


@pytest.fixture
def server(dockerd: Dockerd, base_image: str, tmp_path: Path) -> Iterator[ServerProcess]:
    with docker_server(dockerd, tmp_path / "data") as server:
        yield server


def test_output_written_in_pieces_is_one_log_entry(server: ServerProcess, tmp_path: Path) -> None:
    result = run_modal(server, "run", str(PIECES_APP), timeout=300)
    assert result.returncode == 0, result.output
    assert results(result)["tail"] == "one line in pieces", result.output
