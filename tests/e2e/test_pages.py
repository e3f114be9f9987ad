"""The app pages in a real headless browser (Debian's Chromium, driven by Playwright): the link the client
prints, the login with a token, an app's functions, containers, calls and live logs; a screenshot is kept."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, ServerProcess, run_modal, run_python, write_app
from tests.e2e.test_web import http_url

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("ONSHORE_TEST_ARTIFACTS", REPO / "test-artifacts"))

APP = """
import modal

app = modal.App("onshore-test-pages")


@app.function(secrets=[modal.Secret.from_dict({"PAGES_SECRET": "never-on-a-page-42"})], max_containers=3)
def shout(word: str) -> str:
    print(f"SHOUTING {word.upper()}", flush=True)
    return word.upper()


@app.function()
@modal.fastapi_endpoint()
def hello() -> str:
    return "hi"
"""

CALL = """
import sys

import modal

print("RESULT", modal.Function.from_name("onshore-test-pages", "shout").remote(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def test_app_pages_in_a_browser(server: ServerProcess, tmp_path: Path, browser: object) -> None:
    deployed = run_modal(server, "deploy", str(write_app(tmp_path, "pages_app.py", APP)))
    assert deployed.returncode == 0, deployed.output
    link = re.search(r"View Deployment: (\S+)", deployed.output)
    assert link, deployed.output
    base = http_url(server)
    assert link[1].startswith(f"{base}/apps/ap-"), link[1]  # the HTTP port, not the gRPC one
    caller = write_app(tmp_path, "call.py", CALL)
    assert run_python(server, caller, "first").returncode == 0

    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(link[1])
    assert "/login" in page.url  # no session yet
    page.fill("input[name=token_id]", server.token["token_id"])
    page.fill("input[name=token_secret]", "not-the-secret")
    page.click("button[type=submit]")
    assert "not a valid API token" in page.content()
    page.fill("input[name=token_id]", server.token["token_id"])
    page.fill("input[name=token_secret]", server.token["token_secret"])
    page.click("button[type=submit]")
    page.wait_for_selector("h2#logs-title")
    assert page.url == link[1]
    text = page.inner_text("body")
    assert "onshore-test-pages" in text and "deployed" in text
    assert "shout" in text and "hello" in text
    assert f"{base}/onshore-test-pages-hello" in text  # its web URL
    assert "max 3" in text  # settings
    assert "success" in text  # the call, in recent calls
    assert "running" in text  # the container that ran it
    page.wait_for_function("document.getElementById('logs').textContent.includes('SHOUTING FIRST')")
    # Logs follow live: a call made now shows up without a reload.
    assert run_python(server, caller, "second").returncode == 0
    page.wait_for_function(
        "document.getElementById('logs').textContent.includes('SHOUTING SECOND')", timeout=20_000
    )
    assert "never-on-a-page-42" not in page.content()  # secret values are never shown
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app-page.png"), full_page=True)

    page.goto(f"{base}/apps")
    assert "onshore-test-pages" in page.inner_text("body")
    # The Host-header form of a web URL works in a browser: *.localhost names this machine.
    port = base.rsplit(":", 1)[1]
    page.goto(f"http://onshore-test-pages-hello.localhost:{port}/")
    assert page.inner_text("body") == '"hi"'
    page.close()


def test_pages_need_a_session(server: ServerProcess) -> None:
    base = http_url(server)
    response = httpx.get(f"{base}/apps", follow_redirects=False, timeout=30)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    forged = httpx.get(f"{base}/apps", cookies={"onshore_session": "ak-x.99999999999.00"}, timeout=30)
    assert forged.status_code == 303 and forged.headers["location"].startswith("/login")
    bad = httpx.post(f"{base}/login", data={"token_id": "ak-nope", "token_secret": "x"}, timeout=30)
    assert bad.status_code == 401
