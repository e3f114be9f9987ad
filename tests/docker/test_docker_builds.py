"""Docker-runtime builds that commit containers, driven by the real modal CLI: Image.run_function, and RUN
steps with secrets (which reach the step, and nothing the image or the logs hold)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.conftest import ServerProcess, results, run_modal, write_app
from tests.docker.daemon import Dockerd
from tests.docker.servers import docker_server

RUN_FUNCTION_APP = """
import json
import os

import modal


def download(name: str = "default", size: int = 0) -> None:
    os.makedirs("/models", exist_ok=True)
    with open("/models/weights.txt", "w") as f:
        f.write(f"weights for {name} ({size})")
    with open("relative.txt", "w") as f:  # in the image's working dir
        f.write(os.getcwd())
    seen = {"secret": os.environ.get("BUILD_SECRET") == "@VALUE@", "parent_env": os.environ["FROM_PARENT"]}
    with open("/models/build-env.json", "w") as f:
        json.dump(seen, f)


def broken() -> None:
    raise RuntimeError("the download failed")


image = (
    modal.Image.debian_slim()
    .env({"FROM_PARENT": "kept"})
    .workdir("/work")
    .run_function(
        download,
        kwargs={"name": "bert", "size": 7},
        secrets=[modal.Secret.from_dict({"BUILD_SECRET": "@VALUE@"})],
    )
)
app = modal.App("onshore-docker-run-function", image=image)


@app.function()
def probe() -> dict:
    return {
        "weights": open("/models/weights.txt").read(),
        "relative": open("/work/relative.txt").read(),
        "build_env": json.load(open("/models/build-env.json")),
        "env": os.environ.get("FROM_PARENT"),
        "secret": os.environ.get("BUILD_SECRET"),
        "cwd": os.getcwd(),
    }


@app.local_entrypoint()
def main() -> None:
    print("RESULT probe", json.dumps(probe.remote()))


broken_app = modal.App("onshore-docker-run-function-broken")


@broken_app.function(image=modal.Image.debian_slim().run_function(broken))
def never() -> None:
    return None
"""

DYING_APP = """
import os

import modal

if not modal.is_local():
    os._exit(3)  # every container of this module ends while importing it


def setup() -> None:
    return None


app = modal.App("onshore-docker-dying-build")


@app.function(image=modal.Image.debian_slim().run_function(setup))
def f() -> None:
    return None
"""

SECRETS_APP = """
import json
import os

import modal

token = modal.Secret.from_dict({"BUILD_TOKEN": "@VALUE@"})
image = (
    modal.Image.debian_slim()
    .env({"KEPT": "yes"})
    .run_commands(
        'printf %s "$BUILD_TOKEN" | sha256sum | cut -d" " -f1 > /opt/token.sha256',
        "echo token-length=${#BUILD_TOKEN} kept=$KEPT",
        secrets=[token],
    )
    .pip_install("six", secrets=[token])
)
app = modal.App("onshore-docker-build-secrets", image=image)


@app.function()
def probe() -> dict:
    import six

    return {
        "sha": open("/opt/token.sha256").read().strip(),
        "token": os.environ.get("BUILD_TOKEN"),
        "kept": os.environ.get("KEPT"),
        "six": six.__name__,
    }


@app.local_entrypoint()
def main() -> None:
    print("RESULT probe", json.dumps(probe.remote()))


failing_app = modal.App("onshore-docker-build-secrets-failing")


@failing_app.function(
    image=modal.Image.debian_slim().run_commands("echo failing-with-a-secret && exit 5", secrets=[token])
)
def never() -> None:
    return None
"""


@pytest.fixture(scope="module")
def build_server(
    dockerd: Dockerd, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A docker-runtime server for these builds; no container outlives it."""
    with docker_server(dockerd, tmp_path_factory.mktemp("docker-builds") / "data") as server:
        yield server


def image_with_comment(dockerd: Dockerd, comment: str) -> str:
    """The id of the newest Onshore layer image whose history holds a step with a comment starting so."""
    with docker.APIClient(base_url=dockerd.url, version="auto", timeout=60) as api:
        found = []
        for image in api.images(name="onshore/image"):
            if any(str(step.get("Comment")).startswith(comment) for step in api.history(image["Id"])):
                found.append((image["Created"], str(image["Id"])))
    assert found, f"no layer image with a step {comment!r}"
    return max(found)[1]


def everything_of(dockerd: Dockerd, image_id: str) -> tuple[dict[str, Any], list[Any], bytes]:
    """An image's inspect output, its history, and its saved form (config, history and every layer)."""
    with docker.APIClient(base_url=dockerd.url, version="auto", timeout=300) as api:
        info = api.inspect_image(image_id)
        history = api.history(image_id)
        saved = b"".join(api.get_image(image_id))
    return info, history, saved


def parent_config(dockerd: Dockerd, history: list[Any], comment: str) -> dict[str, Any]:
    """The config of the image below the step with a comment starting so, in an image's history."""
    index = next(i for i, step in enumerate(history) if str(step.get("Comment")).startswith(comment))
    with docker.APIClient(base_url=dockerd.url, version="auto", timeout=60) as api:
        found: dict[str, Any] = api.inspect_image(history[index + 1]["Id"])["Config"]
    return found


def run_in(dockerd: Dockerd, image_id: str, program: str) -> str:
    """What `python -c program` prints in a container of the image."""
    with docker.APIClient(base_url=dockerd.url, version="auto", timeout=60) as api:
        cid = api.create_container(
            image_id, ["python", "-c", program], host_config=api.create_host_config(network_mode="none")
        )["Id"]
        try:
            api.start(cid)
            api.wait(cid, timeout=60)
            return bytes(api.logs(cid)).decode()
        finally:
            api.remove_container(cid, force=True)


def test_run_function_layer_is_the_committed_container(
    build_server: ServerProcess, dockerd: Dockerd, tmp_path: Path
) -> None:
    secret = f"onshore-fn-secret-{uuid.uuid4().hex}"
    app = write_app(tmp_path, "docker_fn_app.py", RUN_FUNCTION_APP.replace("@VALUE@", secret))
    first = run_modal(build_server, "run", f"{app}::main", timeout=600)
    assert first.returncode == 0, first.output
    assert results(first)["probe"] == {
        "weights": "weights for bert (7)",  # the build function's kwargs
        "relative": "/work",  # it ran in the image's working dir
        "build_env": {"secret": True, "parent_env": "kept"},  # its secret and the parent's ENV
        "env": "kept",
        "secret": None,  # the build function's secret is no part of the image
        "cwd": "/work",
    }
    assert "running download in container" in first.output, first.output
    again = run_modal(build_server, "run", f"{app}::main", timeout=300)
    assert again.returncode == 0 and results(again)["probe"]["weights"] == "weights for bert (7)", (
        again.output
    )
    assert "running download in container" not in again.output  # a cache hit

    # The layer keeps its parent's config, and nothing of the container: its environment, command, mount
    # points (the code, the client, the server's socket) or the task's credential.
    layer = image_with_comment(dockerd, "Image.run_function layer ")
    info, history, saved = everything_of(dockerd, layer)
    config, parent = info["Config"], parent_config(dockerd, history, "Image.run_function layer ")
    assert config["WorkingDir"] == "/work" and "FROM_PARENT=kept" in config["Env"], config
    for key in ("Env", "Cmd", "WorkingDir", "User", "Shell", "Volumes", "ExposedPorts"):
        assert config.get(key) == parent.get(key), (key, config, parent)
    assert not config["Entrypoint"] and not parent["Entrypoint"] and not config.get("StopSignal"), config
    for text in (secret.encode(), b"x-onshore-task-secret", b"MODAL_SERVER_URL"):
        assert text not in saved, text
    assert secret not in json.dumps(history) and secret not in build_server.log_text()
    listing = run_in(
        dockerd,
        layer,
        "import os; print([p for p in ('/onshore', '/pkg', '/root/docker_fn_app.py') if os.path.exists(p)]);"
        "print(open('/models/weights.txt').read())",
    )
    assert listing.splitlines() == ["[]", "weights for bert (7)"], listing

    failed = run_modal(build_server, "run", f"{app}::never", timeout=300)
    assert failed.returncode != 0, failed.output
    error = failed.output[failed.output.find("Image build for") :]
    assert "Image.run_function(broken) failed" in error and "the download failed" in error, failed.output


def test_a_run_function_container_that_dies_fails_the_build_at_once(
    build_server: ServerProcess, tmp_path: Path
) -> None:
    app = write_app(tmp_path, "docker_dying_app.py", DYING_APP)
    started = time.monotonic()
    result = run_modal(build_server, "run", f"{app}::f", timeout=300)
    assert result.returncode != 0, result.output
    assert "before running the function" in result.output, result.output
    assert time.monotonic() - started < 150  # not the function's 300 s timeout


def test_secrets_reach_run_steps_and_nothing_else(
    build_server: ServerProcess, dockerd: Dockerd, tmp_path: Path
) -> None:
    secret = f"onshore-build-secret-{uuid.uuid4().hex}"
    app = write_app(tmp_path, "docker_secrets_app.py", SECRETS_APP.replace("@VALUE@", secret))
    result = run_modal(build_server, "run", f"{app}::main", timeout=600)
    assert result.returncode == 0, result.output
    probe = results(result)["probe"]
    assert probe == {
        "sha": hashlib.sha256(secret.encode()).hexdigest(),  # the step saw the secret
        "token": None,
        "kept": "yes",
        "six": "six",
    }, probe
    # The layer's ENV is the steps' too, and so are the secrets, in every RUN step of the layer.
    assert f"token-length={len(secret)} kept=yes" in result.output, result.output
    assert secret not in result.output and secret not in build_server.log_text()

    # Not in the image: its config, its history, nor any of its files.
    pip_layer = image_with_comment(dockerd, "RUN python -m pip install six")
    info, history, saved = everything_of(dockerd, pip_layer)
    assert (
        secret.encode() not in saved and secret not in json.dumps(info) and secret not in json.dumps(history)
    )
    config, parent = info["Config"], parent_config(dockerd, history, "RUN python -m pip install six")
    for key in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Shell", "StopSignal"):
        assert config.get(key) == parent.get(key) or not (config.get(key) or parent.get(key)), (key, config)
    assert "KEPT=yes" in config["Env"] and not [e for e in config["Env"] if e.startswith("BUILD_")], config

    failed = run_modal(build_server, "run", f"{app}::never", timeout=300)
    assert failed.returncode != 0, failed.output
    error = failed.output[failed.output.find("Image build for") :]
    assert "'RUN echo failing-with-a-secret && exit 5' failed with exit code 5" in error, failed.output
    assert "failing-with-a-secret" in error.split("exit code 5", 1)[1], failed.output
    assert secret not in failed.output
