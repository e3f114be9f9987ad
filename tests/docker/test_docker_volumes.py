"""Volumes on the docker runtime: the same overlays bound into real containers, committed and reloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import results, run_modal, write_app
from tests.docker.daemon import Dockerd
from tests.docker.servers import docker_server

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="volumes in containers are overlays the server mounts: it must run as root"
)

APP = """
import json
import os

import modal

vol = modal.Volume.from_name("onshore-docker-vol", create_if_missing=True)


def bake() -> None:
    # An Image.run_function build with the volume mounted: what it copies out becomes part of the image.
    import shutil

    with open("/mnt/vol/seed.txt", "w") as f:
        f.write("seeded by the build")
    vol.commit()
    shutil.copy("/mnt/vol/seed.txt", "/opt/seed.txt")


image = modal.Image.debian_slim().run_function(bake, volumes={"/mnt/vol": vol})
app = modal.App("onshore-docker-volumes", image=image)


@app.function(volumes={"/mnt/vol": vol})
def write(text: str) -> bool:
    with open("/mnt/vol/note.txt", "w") as f:
        f.write(text)
    with open("/mnt/vol/at-exit.txt", "w") as f:
        f.write("background")
    vol.commit()
    return os.path.exists("/.dockerenv")


@app.function(volumes={"/mnt/vol": vol})
def read() -> dict:
    out = {}
    with open("/mnt/vol/held.txt", "w"):
        try:
            vol.reload()
        except RuntimeError as exc:
            out["busy"] = str(exc)
    vol.reload()
    out["note"] = open("/mnt/vol/note.txt").read()
    out["baked"] = open("/opt/seed.txt").read()
    return out


@app.local_entrypoint()
def main() -> None:
    print("RESULT docker", json.dumps(write.remote("from docker")))
    print("RESULT read", json.dumps(read.remote()))
"""


def test_volume_in_docker_containers(dockerd: Dockerd, base_image: str, tmp_path: Path) -> None:
    with docker_server(dockerd, tmp_path / "data") as server:
        result = run_modal(server, "run", str(write_app(tmp_path, "vol_app.py", APP)), timeout=600)
        assert result.returncode == 0, result.output + server.log_text()[-3000:]
        out = results(result)
        assert out["docker"] is True
        assert "there are open files preventing the operation" in out["read"]["busy"]
        assert out["read"]["note"] == "from docker"
        assert out["read"]["baked"] == "seeded by the build"
        listing = run_modal(server, "volume", "ls", "onshore-docker-vol")
        assert listing.stdout.split() == ["at-exit.txt", "held.txt", "note.txt", "seed.txt"], listing.output
