"""Docker-runtime servers on the tests' private dockerd, and the engine's view of their containers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker

from onshore.runtimes.docker.runtime import server_labels
from tests.conftest import ServerProcess
from tests.docker.daemon import Dockerd


def docker_args(dockerd: Dockerd, network: str = "none") -> list[str]:
    return ["--runtime", "docker", "--docker-host", dockerd.url, "--docker-network", network]


def containers(dockerd: Dockerd, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The engine's containers carrying all these labels, stopped ones included."""
    with docker.APIClient(base_url=dockerd.url, version="auto", timeout=30) as api:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        found: list[dict[str, Any]] = api.containers(all=True, filters=filters)
    return found


@contextlib.contextmanager
def docker_server(
    dockerd: Dockerd, data_dir: Path, network: str = "none", **server_env: str
) -> Iterator[ServerProcess]:
    """A docker-runtime server with this data dir; once it has stopped, none of its containers may be left."""
    server = ServerProcess(data_dir, docker_args(dockerd, network), server_env=dict(server_env)).start()
    try:
        yield server
    finally:
        server.stop()
    left = containers(dockerd, server_labels(server.data_dir))
    assert not left, f"containers left behind: {[c['Names'] for c in left]}"
