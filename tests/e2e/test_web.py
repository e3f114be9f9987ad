"""Web endpoints through the gateway, with real HTTP (httpx, a WebSocket client) against an app deployed by
the real client: every decorator, URLs, what HTTP carries, streaming, big bodies, errors, concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import websockets

from tests.conftest import ServerProcess, run_modal, run_python, wait_for, write_app

APP_FILE = Path(__file__).resolve().parent / "apps" / "web_app.py"
APP = "onshore-test-web"


def http_url(server: ServerProcess) -> str:
    info = json.loads((server.data_dir / "server.json").read_text())
    return str(info["http_url"])


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str, str]]:
    """A server of this module's own with the web app deployed: (server, base URL, deploy output)."""
    server = ServerProcess(tmp_path_factory.mktemp("web") / "data").start()
    try:
        result = run_modal(server, "deploy", str(APP_FILE), timeout=180)
        assert result.returncode == 0, result.output + server.log_text()[-3000:]
        yield server, http_url(server), result.output
    finally:
        server.stop()


def get(url: str, **kwargs: object) -> httpx.Response:
    return httpx.get(url, timeout=60, **kwargs)  # type: ignore[arg-type]


def test_deploy_prints_each_endpoints_url_and_get_web_url_returns_it(
    web: tuple[ServerProcess, str, str], tmp_path: Path
) -> None:
    server, base, output = web
    assert f"{base}/{APP}-hello" in output, output
    assert f"{base}/onshore-test-echo" in output, output  # label= names the URL
    assert f"{base}/{APP}-service-info" in output, output  # a class's method
    script = write_app(
        tmp_path,
        "urls.py",
        f"""
        import modal
        print("URL", modal.Function.from_name("{APP}", "hello").get_web_url())
        print("URL", modal.Function.from_name("{APP}", "echo").get_web_url())
        """,
    )
    result = run_python(server, script)
    assert result.returncode == 0, result.output
    assert f"URL {base}/{APP}-hello\nURL {base}/onshore-test-echo\n" in result.stdout, result.output


def test_fastapi_endpoint_query_json_body_method_and_docs(web: tuple[ServerProcess, str, str]) -> None:
    _, base, _ = web
    first = get(f"{base}/{APP}-hello", params={"name": "onshore"})
    assert first.status_code == 200 and first.json()["hello"] == "onshore", first.text
    assert get(f"{base}/{APP}-hello/").json()["hello"] == "world"
    posted = httpx.post(f"{base}/onshore-test-echo", json={"a": [1, 2]}, timeout=60)
    assert posted.status_code == 200 and posted.json() == {"got": {"a": [1, 2]}}, posted.text
    assert get(f"{base}/onshore-test-echo").status_code == 405  # method="POST"
    docs = get(f"{base}/{APP}-hello/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = get(f"{base}/{APP}-hello/openapi.json")
    assert schema.status_code == 200 and "/" in schema.json()["paths"]


def test_host_header_form_reaches_the_same_endpoint(web: tuple[ServerProcess, str, str]) -> None:
    _, base, _ = web
    port = base.rsplit(":", 1)[1]
    response = get(f"{base}/?name=by-host", headers={"Host": f"{APP}-hello.localhost:{port}"})
    assert response.status_code == 200 and response.json()["hello"] == "by-host", response.text


def test_asgi_app_carries_methods_headers_query_cookies_and_status(
    web: tuple[ServerProcess, str, str],
) -> None:
    _, base, _ = web
    url = f"{base}/{APP}-api/anything/a/b"
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        response = httpx.request(
            method,
            url,
            params=[("q", "1"), ("q", "2"), ("status", "201")],
            headers=[("x-one", "1"), ("x-multi", "a"), ("x-multi", "b")],
            cookies={"flavour": "oat"},
            content=b"" if method == "GET" else f"body of {method}".encode(),
            timeout=60,
        )
        assert response.status_code == 201, response.text
        seen = response.json()
        assert seen["method"] == method and seen["path"] == "a/b", seen
        assert seen["query"] == "q=1&q=2&status=201", seen
        assert ["x-one", "1"] in seen["headers"], seen
        assert [h for h in seen["headers"] if h[0] == "x-multi"] == [["x-multi", "a"], ["x-multi", "b"]], seen
        assert seen["cookies"] == {"flavour": "oat"}, seen
        assert seen["body"] == ("" if method == "GET" else f"body of {method}"), seen
        assert seen["root_path"] == f"/{APP}-api", seen
        assert response.headers.get_list("x-repeated") == ["one", "two"]
        assert response.cookies.get("session") == "abc123"


def test_wsgi_flask_app(web: tuple[ServerProcess, str, str]) -> None:
    _, base, _ = web
    assert get(f"{base}/{APP}-flask-app/?x=7").text == "flask GET 7 "
    posted = httpx.post(f"{base}/{APP}-flask-app", content=b"payload", timeout=60)
    assert posted.text == "flask POST  payload", posted.text


def test_web_server_proxies_to_the_containers_own_server(web: tuple[ServerProcess, str, str]) -> None:
    _, base, _ = web
    response = get(f"{base}/{APP}-files/greeting.txt")
    assert response.status_code == 200 and response.text == "served by http.server\n", response.text


def test_class_method_endpoint_runs_after_enter(web: tuple[ServerProcess, str, str]) -> None:
    _, base, _ = web
    response = get(f"{base}/{APP}-service-info")
    assert response.status_code == 200 and response.json() == "from a class", response.text


def test_streaming_response_reaches_the_client_before_the_handler_ends(
    web: tuple[ServerProcess, str, str],
) -> None:
    _, base, _ = web
    get(f"{base}/{APP}-api/anything/warm")  # the container is up: the timing below is the stream's own
    arrivals: list[tuple[float, str]] = []
    with httpx.stream("GET", f"{base}/{APP}-api/events", timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic(), line))
    assert [a[1].split()[1] for a in arrivals] == ["first", "last"], arrivals
    # The handler waits 2 s between its events: the first one came well before the last was written.
    assert arrivals[1][0] - arrivals[0][0] > 1.5, arrivals


def test_100_mb_up_and_down(web: tuple[ServerProcess, str, str]) -> None:
    _, base, _ = web
    block = os.urandom(1024 * 1024)
    expected = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for _ in range(100):
            expected.update(block)
            yield block

    up = httpx.post(f"{base}/{APP}-api/count", content=body(), timeout=120)
    assert up.status_code == 200, up.text
    assert up.json() == {"bytes": 100 * 1024 * 1024, "sha256": expected.hexdigest()}

    digest = hashlib.sha256()
    size = 0
    with httpx.stream("GET", f"{base}/{APP}-api/download", params={"mb": 100}, timeout=120) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            size += len(chunk)
            digest.update(chunk)
    assert size == 100 * 1024 * 1024
    assert digest.hexdigest() == hashlib.sha256((bytes(range(256)) * 4096) * 100).hexdigest()


def test_websocket_on_asgi_app(web: tuple[ServerProcess, str, str]) -> None:
    _, base, _ = web

    async def talk() -> tuple[list[str], int | None]:
        replies = []
        async with websockets.connect(f"ws{base[4:]}/{APP}-api/ws") as sock:
            for text in ("one", "two"):
                await sock.send(text)
                replies.append(str(await sock.recv()))
            await sock.send("bye")
            try:
                await sock.recv()
            except websockets.ConnectionClosed as closed:
                return replies, closed.rcvd.code if closed.rcvd else None
        return replies, None

    replies, code = asyncio.run(talk())
    assert replies == ["echo:one", "echo:two"] and code == 4000, (replies, code)


def test_websocket_through_a_web_server(web: tuple[ServerProcess, str, str]) -> None:
    _, base, _ = web

    async def talk() -> str:
        async with websockets.connect(f"ws{base[4:]}/{APP}-ws-server/") as sock:
            await sock.send("ping")
            return str(await sock.recv())

    assert asyncio.run(talk()) == "server-echo:ping"


def test_an_app_whose_container_cannot_start_is_a_503(web: tuple[ServerProcess, str, str]) -> None:
    _, base, _ = web
    response = get(f"{base}/{APP}-broken")
    assert response.status_code == 503, response.text
    assert "No container could take the request" in response.json()["error"]


def test_answered_requests_are_not_cancelled_and_leave_no_errors(tmp_path: Path) -> None:
    """An answered request's input ends normally in the container: not cancelled, and its wrapper's body
    stream ends without an error in the app's logs."""
    server = ServerProcess(tmp_path / "data").start()
    try:
        app = write_app(
            tmp_path,
            "quiet_web.py",
            """
            import modal

            app = modal.App("onshore-test-quiet-web")


            @app.function()
            @modal.fastapi_endpoint()
            def ping() -> str:
                return "pong"
            """,
        )
        assert run_modal(server, "deploy", str(app)).returncode == 0
        base = http_url(server)
        for _ in range(20):
            assert get(f"{base}/onshore-test-quiet-web-ping").json() == "pong"
        time.sleep(2.0)
        logs = run_modal(server, "app", "logs", "onshore-test-quiet-web", timeout=20).output
        for bad in ("Traceback", "NotFound", "cancel"):
            assert bad not in logs, logs
    finally:
        server.stop()


def test_endpoints_answer_again_after_a_restart(tmp_path: Path) -> None:
    """A deployed endpoint keeps its label across a restart; the URL handed out follows the server's port."""
    first = ServerProcess(tmp_path / "data").start()
    app = write_app(
        tmp_path,
        "restart_web.py",
        """
        import modal

        app = modal.App("onshore-test-restart-web")


        @app.function()
        @modal.fastapi_endpoint(label="onshore-kept")
        def kept() -> str:
            return "still here"
        """,
    )
    url_script = write_app(
        tmp_path,
        "url.py",
        """
        import modal
        print("URL", modal.Function.from_name("onshore-test-restart-web", "kept").get_web_url())
        """,
    )
    try:
        assert run_modal(first, "deploy", str(app)).returncode == 0
        assert get(f"{http_url(first)}/onshore-kept").json() == "still here"
    finally:
        first.stop()
    second = ServerProcess(tmp_path / "data").start()  # --port 0: new ports
    try:
        base = http_url(second)
        assert get(f"{base}/onshore-kept").json() == "still here"
        printed = run_python(second, url_script)
        assert f"URL {base}/onshore-kept" in printed.stdout, printed.output
    finally:
        second.stop()


def test_unknown_url_is_a_json_404(web: tuple[ServerProcess, str, str]) -> None:
    _, base, _ = web
    response = get(f"{base}/no-such-endpoint/x")
    assert response.status_code == 404
    assert "no-such-endpoint" in response.json()["error"]


def test_app_exception_is_a_500_with_its_traceback_in_the_logs_only(
    web: tuple[ServerProcess, str, str],
) -> None:
    server, base, _ = web
    response = get(f"{base}/{APP}-api/boom")
    assert response.status_code == 500 and "kaboom-from-the-app" not in response.text, response.text

    def in_logs() -> bool:
        return "kaboom-from-the-app" in run_modal(server, "app", "logs", APP, timeout=20).stdout

    assert wait_for(in_logs, 20, 1.0)


def test_container_dying_mid_request_is_a_502(web: tuple[ServerProcess, str, str]) -> None:
    _, base, _ = web
    response = get(f"{base}/{APP}-api/die")
    assert response.status_code == 502, response.text
    assert "stopped before it answered" in response.json()["error"]
    assert get(f"{base}/{APP}-api/anything/after").status_code == 200  # a new container takes over


def test_request_past_the_function_timeout_is_a_504(web: tuple[ServerProcess, str, str]) -> None:
    _, base, _ = web
    started = time.monotonic()
    response = get(f"{base}/{APP}-too-slow")
    assert response.status_code == 504, response.text
    assert time.monotonic() - started < 20


def test_client_disconnect_cancels_the_request_in_the_container(web: tuple[ServerProcess, str, str]) -> None:
    server, base, _ = web
    get(f"{base}/{APP}-api/anything/warm")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{base}/{APP}-api/slow", timeout=1.5)

    def seen() -> bool:
        logs = run_modal(server, "app", "logs", APP, timeout=20).stdout
        return "ONSHORE-WEB-DISCONNECTED" in logs or "ONSHORE-WEB-CANCELLED" in logs

    assert wait_for(seen, 20, 1.0), "the app never saw the client go away"


def test_concurrent_requests_share_one_container(web: tuple[ServerProcess, str, str]) -> None:
    _, base, _ = web
    get(f"{base}/{APP}-concurrent", params={"seconds": 0})
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: get(f"{base}/{APP}-concurrent", params={"seconds": 2}), range(8)))
    elapsed = time.monotonic() - started
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert len({a.json()["task"] for a in answers}) == 1  # max_containers=1: one container took all eight
    assert elapsed < 12, elapsed  # at once, not one after another (8 x 2 s)


def test_requests_beyond_capacity_wait_instead_of_failing(web: tuple[ServerProcess, str, str]) -> None:
    _, base, _ = web
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: get(f"{base}/{APP}-single", params={"seconds": 1}), range(4)))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert len({a.json()["task"] for a in answers}) == 1


def test_proxy_auth_needs_a_valid_proxy_token(web: tuple[ServerProcess, str, str]) -> None:
    server, base, output = web
    assert f"{base}/{APP}-guarded" in output
    assert get(f"{base}/{APP}-guarded").status_code == 401
    created = run_onshore(server, "token", "create", "--proxy")
    key = next(line.split(": ", 1)[1] for line in created.splitlines() if line.startswith("Modal-Key: "))
    secret = next(
        line.split(": ", 1)[1] for line in created.splitlines() if line.startswith("Modal-Secret: ")
    )
    assert key.startswith("wk-") and secret.startswith("ws-")
    headers = {"Modal-Key": key, "Modal-Secret": secret}
    allowed = get(f"{base}/{APP}-guarded", headers=headers)
    assert allowed.status_code == 200 and allowed.json() == "secret stuff", allowed.text
    assert get(f"{base}/{APP}-guarded", headers={**headers, "Modal-Secret": "ws-wrong"}).status_code == 401
    # An API token is not a proxy token.
    api = {"Modal-Key": server.token["token_id"], "Modal-Secret": server.token["token_secret"]}
    assert get(f"{base}/{APP}-guarded", headers=api).status_code == 401
    run_onshore(server, "token", "revoke", key)
    assert wait_for(lambda: get(f"{base}/{APP}-guarded", headers=headers).status_code == 401, 10, 0.5)


def test_redeploy_keeps_the_url(web: tuple[ServerProcess, str, str]) -> None:
    server, base, _ = web
    result = run_modal(server, "deploy", str(APP_FILE), timeout=180)
    assert result.returncode == 0, result.output
    assert f"{base}/{APP}-hello" in result.output
    assert get(f"{base}/{APP}-hello").json()["hello"] == "world"


def run_onshore(server: ServerProcess, *args: str) -> str:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "onshore.cli.main", *args, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout
