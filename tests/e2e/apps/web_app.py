"""Web endpoints of every kind, for tests/e2e/test_web.py (deployed with the real client)."""

import asyncio
import os
import time

import modal

app = modal.App("onshore-test-web")


@app.function()
@modal.fastapi_endpoint(docs=True)
def hello(name: str = "world") -> dict:
    return {"hello": name, "task": os.environ.get("MODAL_TASK_ID", "")}


@app.function()
@modal.fastapi_endpoint(method="POST", label="onshore-test-echo")
def echo(item: dict) -> dict:
    return {"got": item}


@app.function()
@modal.asgi_app()
def api():
    from fastapi import FastAPI, Request, Response, WebSocket
    from fastapi.responses import StreamingResponse

    web = FastAPI()

    @web.api_route("/anything/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def anything(rest: str, request: Request) -> Response:
        body = await request.body()
        headers = [[k, v] for k, v in request.headers.items() if k.startswith("x-")]
        response = Response(
            content=__import__("json").dumps(
                {
                    "method": request.method,
                    "path": rest,
                    "query": str(request.url.query),
                    "headers": headers,
                    "cookies": dict(request.cookies),
                    "body": body.decode(errors="replace"),
                    "root_path": request.scope.get("root_path", ""),
                }
            ),
            media_type="application/json",
            status_code=int(request.query_params.get("status", "200")),
        )
        response.headers.append("x-repeated", "one")
        response.headers.append("x-repeated", "two")
        response.set_cookie("session", "abc123")
        return response

    @web.get("/events")
    async def events() -> StreamingResponse:
        async def gen():
            yield f"data: first {time.time()}\n\n"
            await asyncio.sleep(2.0)
            yield f"data: last {time.time()}\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream")

    @web.post("/count")
    async def count(request: Request) -> dict:
        import hashlib

        digest = hashlib.sha256()
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            digest.update(chunk)
        return {"bytes": size, "sha256": digest.hexdigest()}

    @web.get("/download")
    async def download(mb: int = 1) -> StreamingResponse:
        block = bytes(range(256)) * 4096  # 1 MiB

        async def gen():
            for _ in range(mb):
                yield block

        return StreamingResponse(gen(), media_type="application/octet-stream")

    @web.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("kaboom-from-the-app")

    @web.get("/die")
    async def die() -> dict:
        os._exit(3)

    @web.get("/slow")
    async def slow(request: Request) -> dict:
        started = time.time()
        try:
            while time.time() - started < 60:
                if await request.is_disconnected():
                    print("ONSHORE-WEB-DISCONNECTED", flush=True)
                    return {}
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:  # the input was cancelled before the app looked again
            print("ONSHORE-WEB-CANCELLED", flush=True)
            raise
        return {"slept": True}

    @web.websocket("/ws")
    async def ws(sock: WebSocket) -> None:
        await sock.accept()
        while True:
            text = await sock.receive_text()
            if text == "bye":
                await sock.close(code=4000)
                return
            await sock.send_text(f"echo:{text}")

    return web


@app.function()
@modal.wsgi_app()
def flask_app():
    from flask import Flask, request

    web = Flask(__name__)

    @web.route("/", methods=["GET", "POST"])
    def index() -> str:
        return f"flask {request.method} {request.args.get('x', '')} {request.get_data(as_text=True)}"

    return web


@app.function()
@modal.web_server(8765, startup_timeout=20)
def files() -> None:
    import pathlib
    import subprocess

    root = pathlib.Path("/tmp/onshore-web-files")
    root.mkdir(exist_ok=True)
    (root / "greeting.txt").write_text("served by http.server\n")
    subprocess.Popen(["python", "-m", "http.server", "8765", "--bind", "0.0.0.0", "--directory", str(root)])


@app.function(timeout=2)
@modal.fastapi_endpoint()
def too_slow() -> str:
    time.sleep(30)
    return "never"


@app.function(max_containers=1)
@modal.concurrent(max_inputs=8)
@modal.fastapi_endpoint()
async def concurrent(seconds: float = 1.0) -> dict:
    await asyncio.sleep(seconds)
    return {"task": os.environ.get("MODAL_TASK_ID", "")}


@app.function(max_containers=1)
@modal.fastapi_endpoint()
def single(seconds: float = 0.5) -> dict:
    time.sleep(seconds)
    return {"task": os.environ.get("MODAL_TASK_ID", "")}


@app.function()
@modal.fastapi_endpoint(requires_proxy_auth=True)
def guarded() -> str:
    return "secret stuff"


@app.cls()
class Service:
    @modal.enter()
    def start(self) -> None:
        self.greeting = "from a class"

    @modal.fastapi_endpoint()
    def info(self) -> str:
        return self.greeting

    @modal.method()
    def plain(self) -> int:
        return 7


WS_SERVER = """
import asyncio

import websockets


async def echo(sock):
    async for message in sock:
        await sock.send("server-echo:" + message)


async def main():
    async with websockets.serve(echo, "0.0.0.0", 8766):
        await asyncio.Future()


asyncio.run(main())
"""


@app.function()
@modal.web_server(8766, startup_timeout=20)
def ws_server() -> None:
    import subprocess

    subprocess.Popen(["python", "-c", WS_SERVER])


@app.function()
@modal.asgi_app()
def broken():
    raise RuntimeError("this app cannot be built")
