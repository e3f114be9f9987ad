"""`onshore server --runtime docker` on a private dockerd, driven by the real modal CLI: images, containers,
exec, and what a stopped or crashed server leaves behind."""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onshore.images.pythons import ClientPackages, linux_platform
from onshore.runtimes.docker.runtime import LABEL_TASK, server_labels
from onshore.runtimes.pyenv import installed_client_version
from tests.conftest import REPO, ServerProcess, results, run_modal, run_python, wait_for, write_app
from tests.docker.daemon import Dockerd
from tests.docker.servers import containers, docker_args, docker_server
from tests.e2e.test_container_cli import drive_pty

EXEC_CLIENT = REPO / "tests" / "e2e" / "apps" / "container_cli_client.py"

BASIC_APP = """
import json
import os
import sys

import modal

app = modal.App("onshore-docker-basic")


@app.function(min_containers=1, secrets=[modal.Secret.from_dict({"DOCKER_TEST_SECRET": "from-the-secret"})])
def probe() -> dict:
    import modal as client

    return {
        "task_id": os.environ["MODAL_TASK_ID"],
        "dockerenv": os.path.exists("/.dockerenv"),
        "hostname": open("/etc/hostname").read().strip(),
        "python": "%d.%d" % sys.version_info[:2],
        "cwd": os.getcwd(),
        "client": client.__file__,
        "secret": os.environ.get("DOCKER_TEST_SECRET"),
        "socket_dir": sorted(os.listdir("/onshore/server")),
        "sees_data_dir": os.path.exists("DATA_DIR/token.json"),
    }
"""

CALL_CLIENT = """
import json
import sys

import modal

fn = modal.Function.from_name(sys.argv[1], sys.argv[2])
print("RESULT call", json.dumps(fn.remote()), flush=True)
"""

LAYERS_APP = """
import json
import os

import modal

image = (
    modal.Image.debian_slim()
    .pip_install("six")
    .env({"GREETING": "hello from the image"})
    .run_commands("echo built > /opt/built.txt", "echo kept > /root/from-the-image.txt")
    .add_local_file("data.txt", "/opt/data.txt", copy=True)
    .workdir("/work")
)
app = modal.App("onshore-docker-layers", image=image)


@app.function()
def probe(payload: bytes) -> tuple[dict, bytes]:
    import six

    import layers_app

    info = {
        "six": six.__name__,
        "greeting": os.environ["GREETING"],
        "built": open("/opt/built.txt").read(),
        "data": open("/opt/data.txt").read(),
        "image_file_in_root": open("/root/from-the-image.txt").read(),
        "cwd": os.getcwd(),
        "code_importable": layers_app.__file__,
        "payload": len(payload),
    }
    return info, payload + b"!"  # over 2 MiB both ways: blobs, through the server's HTTP port


@app.local_entrypoint()
def main() -> None:
    info, echoed = probe.remote(b"x" * 3_000_000)
    print("RESULT probe", json.dumps({**info, "echoed": len(echoed)}))
"""

FAILING_APP = """
import modal

image = modal.Image.debian_slim().run_commands("echo about to fail && exit 7")
app = modal.App("onshore-docker-failing", image=image)


@app.function()
def f() -> int:
    return 1
"""


def deploy(server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(tmp_path, "basic_app.py", BASIC_APP.replace("DATA_DIR", str(server.data_dir)))
    result = run_modal(server, "deploy", str(app), timeout=600)
    assert result.returncode == 0, result.output


def call(server: ServerProcess, tmp_path: Path) -> dict[str, Any]:
    client = write_app(tmp_path, "call_client.py", CALL_CLIENT)
    result = run_python(server, client, "onshore-docker-basic", "probe", timeout=300)
    assert result.returncode == 0, result.output
    found: dict[str, Any] = results(result)["call"]
    return found


@pytest.fixture(scope="module")
def runtime_server(
    dockerd: Dockerd, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One docker-runtime server for the tests that share its image cache; no container outlives it."""
    with docker_server(dockerd, tmp_path_factory.mktemp("docker-rt") / "data") as server:
        yield server


def test_default_image_runs_in_a_docker_container(
    runtime_server: ServerProcess, dockerd: Dockerd, tmp_path: Path
) -> None:
    deploy(runtime_server, tmp_path)
    probe = call(runtime_server, tmp_path)
    assert probe["dockerenv"] and probe["python"] == "3.11", probe
    assert probe["cwd"] == "/root" and probe["client"] == "/pkg/modal/__init__.py", probe
    assert probe["secret"] == "from-the-secret", probe
    # The server's sockets (API, blobs) are all a container sees of the data dir.
    assert probe["socket_dir"] == ["api.sock", "blobs.sock"] and not probe["sees_data_dir"], probe

    # A real container of the engine, labelled with its server and task.
    task_id = probe["task_id"]
    found = containers(dockerd, {**server_labels(runtime_server.data_dir), LABEL_TASK: task_id})
    assert len(found) == 1 and found[0]["State"] == "running", found
    assert found[0]["Id"].startswith(probe["hostname"]), (found, probe)

    # modal container exec: the container's environment and working directory.
    done = run_modal(
        runtime_server,
        "container",
        "exec",
        task_id,
        "--",
        "sh",
        "-c",
        "test -f /.dockerenv && echo in-docker; pwd; echo $DOCKER_TEST_SECRET",
    )
    assert done.returncode == 0, done.output
    assert done.stdout.splitlines() == ["in-docker", "/root", "from-the-secret"], done.output
    # Pipes kept apart, and the exit status (which the CLI does not show) through the client's own code.
    script = "echo out; echo err >&2; exit 3"
    status = run_python(runtime_server, EXEC_CLIENT, "exec", task_id, "sh", "-c", script)
    assert status.returncode == 0, status.output
    assert results(status)["exec"] == {"code": 3, "stdout": "out\n", "stderr": "err\n"}, status.output
    # ... and a terminal.
    command = "echo ready; read answer; echo got-$answer; tty; stty size; exit 7"
    rc, output = drive_pty(
        [sys.executable, "-m", "modal", "container", "exec", "--pty", task_id, "--", "sh", "-c", command],
        runtime_server.env(),
        [("ready", b"hello\r")],
    )
    assert rc == 0 and "got-hello" in output and "/dev/pts/" in output and "40 120" in output, output

    stopped = run_modal(runtime_server, "app", "stop", "-y", "onshore-docker-basic")
    assert stopped.returncode == 0, stopped.output
    assert wait_for(lambda: not containers(dockerd, {LABEL_TASK: task_id}), 30), "not removed"


def test_layers_and_the_build_cache(runtime_server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("data!\n")
    app = write_app(tmp_path, "layers_app.py", LAYERS_APP)
    first = run_modal(runtime_server, "run", str(app), cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.output
    assert "RUN python -m pip install six" in first.output, first.output
    expected = {
        "six": "six",
        "greeting": "hello from the image",
        "built": "built\n",
        "data": "data!\n",
        "image_file_in_root": "kept\n",
        "cwd": "/work",
        "code_importable": "/root/layers_app.py",
        "payload": 3_000_000,
        "echoed": 3_000_001,
    }
    assert results(first)["probe"] == expected

    second = run_modal(runtime_server, "run", str(app), cwd=tmp_path, timeout=300)
    assert second.returncode == 0, second.output
    assert "RUN python -m pip install six" not in second.output and "Step " not in second.output
    assert results(second)["probe"] == expected


def test_a_failing_run_step_fails_the_run(runtime_server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(tmp_path, "failing_app.py", FAILING_APP)
    result = run_modal(runtime_server, "run", str(app) + "::f", timeout=600)
    assert result.returncode != 0, result.output
    error = result.output[result.output.find("Image build for") :]
    assert "'RUN echo about to fail && exit 7' failed with exit code 7" in error, result.output
    assert "about to fail" in error.split("exit code 7", 1)[1], result.output


def test_stopped_or_crashed_servers_leave_no_container(
    dockerd: Dockerd, base_image: str, tmp_path: Path
) -> None:
    server = ServerProcess(tmp_path / "data", docker_args(dockerd)).start()
    labels = server_labels(server.data_dir)
    try:
        deploy(server, tmp_path)
        running = wait_for(lambda: [c for c in containers(dockerd, labels) if c["State"] == "running"], 120)
        assert running, server.log_text()[-3000:]
        first = running[0]["Id"]
        # A crash leaves the container behind; the next start of the server removes it.
        server.stop(signal.SIGKILL)
        assert first in [c["Id"] for c in containers(dockerd, labels)]
        server.start()
        assert first not in [c["Id"] for c in containers(dockerd, labels)]
        # The deployed app's warm container comes back, a new one; a clean stop removes it.
        assert wait_for(lambda: containers(dockerd, labels), 120), server.log_text()[-3000:]
    finally:
        server.stop()
    assert containers(dockerd, labels) == []


def test_an_unreachable_engine_fails_the_start(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/no-docker.sock"
    server = ServerProcess(tmp_path / "data", ["--runtime", "docker", "--docker-host", url])
    with pytest.raises(RuntimeError) as info:
        server.start()
    assert f"cannot reach the Docker engine at {url}" in str(info.value), str(info.value)
    assert server.proc is not None and server.proc.returncode == 1


def test_docker_options_need_the_docker_runtime(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", ["--docker-network", "none"])
    with pytest.raises(RuntimeError, match=re.escape("--docker-network apply to --runtime docker only")):
        server.start()


def test_server_file_names_the_runtime(runtime_server: ServerProcess) -> None:
    info = json.loads((runtime_server.data_dir / "server.json").read_text())
    assert info["runtime"] == "docker"


def _pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=5):
            return True
    except OSError:
        return False


async def test_client_packages_for_a_python_the_host_may_lack(tmp_path: Path) -> None:
    """Without an interpreter of the image's version, the client is installed for that version on Linux."""
    if not _pypi_reachable():
        pytest.skip("pypi.org:443 is unreachable from this machine")
    packages = ClientPackages(tmp_path / "packages", linux_platform())
    folder = Path(await packages.folder(installed_client_version(), "", "3.12.1"))
    assert (folder / "modal" / "__init__.py").exists()
    built = sorted(p.name for p in folder.glob("multidict/*.so"))
    assert built and all("cpython-312" in name for name in built), built
    assert await packages.folder(installed_client_version(), "", "3.12.7") == str(folder)  # reused


def test_memory_limit_kills_and_explains(runtime_server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(
        tmp_path,
        "docker_limits.py",
        """
        import json

        import modal

        app = modal.App("onshore-docker-limits")


        @app.function(memory=(64, 128))
        def hog() -> int:
            blocks = [bytearray(32 * 1024 * 1024) for _ in range(32)]  # 1 GiB, far over the limit
            return len(blocks)


        @app.function()
        def fine() -> str:
            return "still serving"


        @app.local_entrypoint()
        def main() -> None:
            try:
                print("RESULT hog", json.dumps(hog.remote()))
            except Exception as exc:
                print("RESULT hog", json.dumps(f"{type(exc).__name__}: {exc}"))
            print("RESULT fine", json.dumps(fine.remote()))
        """,
    )
    result = run_modal(runtime_server, "run", str(app), timeout=300)
    assert result.returncode == 0, result.output
    found = results(result)
    assert "ran out of memory (its limit is 128 MiB)" in found["hog"], found
    assert found["fine"] == "still serving"


def test_emulated_gpus_are_placed_on_docker_containers_too(
    dockerd: Dockerd, base_image: str, tmp_path: Path
) -> None:
    server = ServerProcess(tmp_path / "data", [*docker_args(dockerd), "--gpus", "T4:1,H100:1"]).start()
    try:
        app = write_app(
            tmp_path,
            "docker_gpus.py",
            """
            import json
            import os

            import modal

            app = modal.App("onshore-docker-gpus")


            @app.function(gpu="H100")
            def h100() -> str:
                return os.environ.get("CUDA_VISIBLE_DEVICES", "")


            @app.function(gpu="T4")
            def t4() -> str:
                return os.environ.get("CUDA_VISIBLE_DEVICES", "")


            @app.local_entrypoint()
            def main() -> None:
                print("RESULT gpus", json.dumps([h100.remote(), t4.remote()]))
            """,
        )
        result = run_modal(server, "run", str(app), timeout=300)
        assert result.returncode == 0, result.output
        assert results(result)["gpus"] == ["1", "0"]  # emulated: indices, and no device request
    finally:
        server.stop()
