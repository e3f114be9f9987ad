"""`Image.from_registry(tag, add_python=...)` on the docker runtime, with the real modal client: a registry
image without Python gets python-build-standalone's Python from a named mount the server provides (here from
a file:// mirror holding a stand-in tarball, see pbs_standin.py)."""

from __future__ import annotations

import platform
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from modal.mount import python_standalone_mount_name

from onshore.api.images import BUILDER_VERSION
from onshore.services.standalone import MIRROR_ENV, parse_name
from tests.conftest import ServerProcess, results, run_modal, write_app
from tests.docker.daemon import Dockerd, DockerdUnavailable
from tests.docker.pbs_standin import make_mirror
from tests.docker.servers import docker_server

APP = """
import json
import os
import platform
import sys

import modal

image = modal.Image.from_registry("TAG", add_python="SERIES")
app = modal.App("onshore-add-python", image=image)


@app.function()
def probe() -> dict:
    return {
        "version": sys.version,
        "version_info": list(sys.version_info[:3]),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "debian_python": os.path.exists("/usr/bin/python3"),
        "ssl": __import__("ssl").OPENSSL_VERSION,
    }


@app.local_entrypoint()
def main() -> None:
    print("RESULT probe", json.dumps(probe.remote()))
"""


def _app(tmp_path: Path, tag: str, series: str) -> Path:
    return write_app(tmp_path, "add_python_app.py", APP.replace("TAG", tag).replace("SERIES", series))


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file:// mirror holding the stand-in for add_python="3.11" of the server's builder version."""
    dist = parse_name(python_standalone_mount_name("3.11", BUILDER_VERSION))
    try:
        return make_mirror(tmp_path_factory.mktemp("pbs-mirror"), dist.release, dist.asset)
    except DockerdUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def add_python_server(
    dockerd: Dockerd, slim_image: str, mirror: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A docker-runtime server fetching python-build-standalone from the mirror; no container outlives it."""
    with docker_server(
        dockerd, tmp_path_factory.mktemp("add-python") / "data", **{MIRROR_ENV: mirror.as_uri()}
    ) as s:
        yield s


def test_registry_image_gets_python(
    add_python_server: ServerProcess, slim_image: str, mirror: Path, tmp_path: Path
) -> None:
    app = _app(tmp_path, slim_image, "3.11")
    first = run_modal(add_python_server, "run", str(app), timeout=900)
    assert first.returncode == 0, first.output + add_python_server.log_text()[-3000:]
    assert "COPY /python/. /usr/local" in first.output, first.output
    probe = results(first)["probe"]
    assert probe["version_info"][:2] == [3, 11], probe
    assert probe["executable"].startswith("/usr/local/bin/python") and probe["prefix"] == "/usr/local", probe
    assert not probe["debian_python"], probe  # the registry image had none: this is the mount's
    assert probe["machine"] == platform.machine() and "glibc" in probe["platform"], probe
    assert probe["ssl"].startswith("OpenSSL"), probe

    # After a restart the mount and the image are reused: the mirror is not needed again.
    shutil.rmtree(mirror / parse_name(python_standalone_mount_name("3.11", BUILDER_VERSION)).release)
    add_python_server.stop()
    add_python_server.start()
    second = run_modal(add_python_server, "run", str(app), timeout=600)
    assert second.returncode == 0, second.output + add_python_server.log_text()[-3000:]
    assert "COPY /python/. /usr/local" not in second.output, second.output
    assert results(second)["probe"]["version"] == probe["version"]


def test_missing_tarball_is_explained(
    add_python_server: ServerProcess, slim_image: str, tmp_path: Path
) -> None:
    name = python_standalone_mount_name("3.12", BUILDER_VERSION)  # the mirror holds only 3.11
    dist = parse_name(name)
    app = _app(tmp_path, slim_image, "3.12")
    result = run_modal(
        add_python_server, "run", str(app), timeout=300, env=add_python_server.env(COLUMNS="2000")
    )
    assert result.returncode != 0, result.output
    output = " ".join(result.output.split())
    assert f"Mount '{name}'" in output, result.output
    assert f"/{dist.release}/{dist.asset.replace('+', '%2B')}" in output, result.output
    assert MIRROR_ENV in output and "no such release asset" in output, result.output
    assert "Traceback" not in result.stdout and "InternalError" not in output, result.output
