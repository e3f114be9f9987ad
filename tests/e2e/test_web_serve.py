"""`modal serve` and `onshore serve`: live reload of a web app, in-flight requests finishing on the old code,
and Ctrl-C stopping it all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import ServerProcess, wait_for
from tests.e2e.test_web import http_url

APP = """
import time

import modal

app = modal.App("onshore-test-serve")


@app.function()
@modal.fastapi_endpoint()
def page(wait: float = 0.0) -> str:
    time.sleep(wait)
    return "VERSION"
"""


def _write(path: Path, version: str) -> None:
    path.write_text(textwrap.dedent(APP).lstrip().replace("VERSION", version))


def _text(url: str) -> str:
    try:
        response = httpx.get(url, timeout=30)
    except httpx.HTTPError:
        return ""
    return response.json() if response.status_code == 200 else ""


def _serve(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[str]) -> str:
    """Ctrl-C, as a user at a terminal: the whole foreground group gets SIGINT."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.stdout is not None
    return proc.stdout.read()


def test_modal_serve_reloads_edits_and_ctrl_c_stops_it(server: ServerProcess, tmp_path: Path) -> None:
    app_file = tmp_path / "served.py"
    _write(app_file, "one")
    proc = _serve([sys.executable, "-m", "modal", "serve", str(app_file)], server.env(), tmp_path)
    url = f"{http_url(server)}/onshore-test-serve-page-dev"
    try:
        assert wait_for(lambda: _text(url) == "one", 60, 0.5), _stop(proc)
        # A request in flight when the file changes finishes on the code it started on.
        slow: list[str] = []
        worker = threading.Thread(target=lambda: slow.append(_text(f"{url}?wait=4")))
        worker.start()
        time.sleep(1.0)
        _write(app_file, "two")
        assert wait_for(lambda: _text(url) == "two", 30, 0.5), _stop(proc)
        worker.join(30)
        assert slow == ["one"], slow
    finally:
        output = _stop(proc)
    assert "Serving" in output, output
    assert "Traceback" not in output and "Error" not in output, output  # each reload republished cleanly
    # Ctrl-C stopped the app: its URL no longer answers.
    assert wait_for(lambda: httpx.get(url, timeout=10).status_code == 404, 20, 0.5)


def test_onshore_serve_runs_the_same_way(tmp_path: Path) -> None:
    """`onshore serve FILE` starts the embedded server when none runs, and serves the app on it."""
    home = tmp_path / "home"
    app_file = tmp_path / "served.py"
    _write(app_file, "embedded")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["ONSHORE_HOME"] = str(home)
    proc = _serve([sys.executable, "-m", "onshore.cli.main", "serve", str(app_file)], env, tmp_path)
    try:
        info = home / "server.json"
        assert wait_for(info.exists, 60, 0.5), _stop(proc)
        holder = ServerProcess(home)
        url = f"{http_url(holder)}/onshore-test-serve-page-dev"
        assert wait_for(lambda: _text(url) == "embedded", 90, 0.5), _stop(proc)
    finally:
        _stop(proc)
        _stop_embedded(home)


def _stop_embedded(home: Path) -> None:
    """The embedded server `onshore serve` started: `onshore stop` ends it (by the pid it recorded)."""
    subprocess.run(
        [sys.executable, "-m", "onshore.cli.main", "stop", "--data-dir", str(home)],
        capture_output=True,
        timeout=60,
    )
