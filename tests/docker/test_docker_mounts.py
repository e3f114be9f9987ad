"""Files mounted at absolute paths on the docker runtime (add_local_* without copy=True, outside /root)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, results, run_modal, write_app
from tests.docker.daemon import Dockerd
from tests.docker.servers import docker_server

MOUNTS_APP = """
import json
import os

import modal

image = (
    modal.Image.debian_slim()
    .add_local_dir("data-src", remote_path="/data")
    .add_local_file("app.conf", remote_path="/etc/onshore-test/app.conf")
    .add_local_file("extra.py", remote_path="/root/extra.py")
)
app = modal.App("onshore-docker-mounts", image=image)


@app.function()
def mounted() -> dict:
    import extra

    with open("/data/table.csv") as fh:
        table = fh.read()
    with open("/etc/onshore-test/app.conf") as fh:
        conf = fh.read()
    return {
        "table": table,
        "conf": conf,
        "nested": sorted(os.listdir("/data/nested")),
        "etc_still_there": os.path.exists("/etc/passwd"),
        "extra": extra.VALUE,
    }


@app.local_entrypoint()
def main() -> None:
    print("RESULT value", json.dumps(mounted.remote()))
"""


@pytest.fixture
def server(dockerd: Dockerd, base_image: str, tmp_path: Path) -> Iterator[ServerProcess]:
    with docker_server(dockerd, tmp_path / "data") as server:
        yield server


def test_files_mounted_at_absolute_paths(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "data-src" / "nested").mkdir(parents=True)
    (tmp_path / "data-src" / "table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "data-src" / "nested" / "one.txt").write_text("1")
    (tmp_path / "app.conf").write_text("mode = test\n")
    (tmp_path / "extra.py").write_text("VALUE = 'from /root'\n")
    app = write_app(tmp_path, "mounts_app.py", MOUNTS_APP)
    result = run_modal(server, "run", str(app), cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.output
    assert results(result)["value"] == {
        "table": "a,b\n1,2\n",
        "conf": "mode = test\n",
        "nested": ["one.txt"],
        "etc_still_there": True,  # copied into the container: the image's /etc stays
        "extra": "from /root",
    }, result.output
