"""Web endpoints on the docker runtime: the gateway reaches apps in real containers through the same calls."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator

import docker
import httpx
import pytest
import websockets

from tests.conftest import ServerProcess, run_modal, write_app
from tests.docker.daemon import Dockerd
from tests.docker.servers import docker_server

NETWORK = "onshore-test-web"

WEB_APP = """
import asyncio

import modal

image = modal.Image.debian_slim().pip_install("fastapi", "flask")
app = modal.App("onshore-docker-web", image=image)


@app.function()
@modal.fastapi_endpoint()
def hello(name: str = "world") -> dict:
    return {"hello": name, "docker": __import__("os").path.exists("/.dockerenv")}


@app.function()
@modal.asgi_app()
def api():
    from fastapi import FastAPI, WebSocket
    from fastapi.responses import StreamingResponse

    web = FastAPI()

    @web.get("/events")
    async def events():
        async def gen():
            for i in range(3):
                yield f"data: {i}\\n\\n"
                await asyncio.sleep(0.1)

        return StreamingResponse(gen(), media_type="text/event-stream")

    @web.websocket("/ws")
    async def ws(sock: WebSocket):
        await sock.accept()
        await sock.send_text("echo:" + await sock.receive_text())
        await sock.close()

    return web


@app.function()
@modal.wsgi_app()
def flask_app():
    from flask import Flask

    web = Flask(__name__)

    @web.route("/")
    def index():
        return "flask in docker"

    return web


@app.function()
@modal.web_server(8000, startup_timeout=30)
def files():
    import pathlib
    import subprocess

    pathlib.Path("/srv").mkdir(exist_ok=True)
    pathlib.Path("/srv/a.txt").write_text("from a web_server in docker")
    subprocess.Popen(["python", "-m", "http.server", "8000", "--bind", "0.0.0.0", "--directory", "/srv"])
"""


@contextlib.contextmanager
def internal_network(dockerd: Dockerd) -> Iterator[str]:
    """A network with no way out (the tests' dockerd has no default bridge): it gives containers the eth0 a
    web_server's proxy looks up."""
    client = docker.DockerClient(base_url=dockerd.url, version="auto", timeout=60)
    network = client.networks.create(NETWORK, driver="bridge", internal=True)
    try:
        yield NETWORK
    finally:
        network.remove()
        client.close()


@pytest.fixture(scope="module")
def web_server(
    dockerd: Dockerd, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, str]]:
    with internal_network(dockerd) as network:
        data = tmp_path_factory.mktemp("docker-web") / "data"
        with docker_server(dockerd, data, network) as server:
            directory = tmp_path_factory.mktemp("docker-web-app")
            app = write_app(directory, "docker_web_app.py", WEB_APP)
            result = run_modal(server, "deploy", str(app), timeout=900)
            assert result.returncode == 0, result.output + server.log_text()[-3000:]
            info = json.loads((server.data_dir / "server.json").read_text())
            yield server, str(info["http_url"])


def test_endpoints_answer_from_docker_containers(web_server: tuple[ServerProcess, str]) -> None:
    _, base = web_server
    hello = httpx.get(f"{base}/onshore-docker-web-hello", params={"name": "docker"}, timeout=120)
    assert hello.status_code == 200 and hello.json() == {"hello": "docker", "docker": True}, hello.text
    flask = httpx.get(f"{base}/onshore-docker-web-flask-app", timeout=120)
    assert flask.text == "flask in docker", flask.text
    events = httpx.get(f"{base}/onshore-docker-web-api/events", timeout=120)
    assert events.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n", events.text
    served = httpx.get(f"{base}/onshore-docker-web-files/a.txt", timeout=120)
    assert served.status_code == 200 and served.text == "from a web_server in docker", served.text

    async def talk() -> str:
        async with websockets.connect(f"ws{base[4:]}/onshore-docker-web-api/ws") as sock:
            await sock.send("hi")
            return str(await sock.recv())

    assert asyncio.run(talk()) == "echo:hi"
