"""Apps end to end: ephemeral runs and their end, deployments, redeploys, look-ups, `modal app` commands."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onshore.cli.embedded import pid_alive
from tests.conftest import REPO, ServerProcess, run_modal, run_python, wait_for

APPS = REPO / "tests" / "e2e" / "apps"
EPHEMERAL = APPS / "apps_ephemeral.py"
DEPLOYED = APPS / "apps_deployed.py"
CLIENT = APPS / "apps_client.py"

_APP_ID = re.compile(r"/apps/(ap-[A-Za-z0-9]{22})")


# ---------------------------------------------------------------- helpers
def app_list(server: ServerProcess) -> list[dict[str, Any]]:
    result = run_modal(server, "app", "list", "--json")
    assert result.returncode == 0, result.output
    apps: list[dict[str, Any]] = json.loads(result.stdout)
    return apps


def app_row(server: ServerProcess, app_id: str) -> dict[str, Any]:
    rows = [a for a in app_list(server) if a["app_id"] == app_id]
    assert rows, f"{app_id} missing from `modal app list`"
    return rows[0]


def app_id_in(output: str) -> str:
    match = _APP_ID.search(output)
    assert match, f"no app id in output:\n{output}"
    return match.group(1)


def result_of(output: str) -> Any:
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT line in output:\n{output}"
    return json.loads(lines[-1][len("RESULT ") :])


def client(server: ServerProcess, *args: str) -> Any:
    result = run_python(server, CLIENT, *args)
    assert result.returncode == 0, result.output
    return result_of(result.stdout)


def app_copy(directory: Path, name: str, version: str) -> Path:
    """A copy of the deployed test app under another name and code version."""
    source = DEPLOYED.read_text()
    source = source.replace('APP_NAME = "e2e-apps-deployed"', f'APP_NAME = "{name}"')
    source = source.replace('VERSION = "v1"', f'VERSION = "{version}"')
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name.replace('-', '_')}.py"  # one file, edited between deployments
    path.write_text(source)
    return path


def deploy(server: ServerProcess, path: Path) -> str:
    result = run_modal(server, "deploy", str(path))
    assert result.returncode == 0, result.output
    return app_id_in(result.output)


def start_run(server: ServerProcess, marker: str, sleep: float, **env: str) -> subprocess.Popen[str]:
    """Start `modal run` of the ephemeral test app in the background."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modal",
            "run",
            str(EPHEMERAL),
            "--marker",
            marker,
            "--sleep",
            str(sleep),
        ],
        env=server.env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def end(proc: subprocess.Popen[str]) -> str:
    """Make sure a background client is gone; return what it printed."""
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate(timeout=30)
    return out or ""


# ---------------------------------------------------------------- ephemeral apps
def test_run_streams_container_output_and_stops_app_when_done(server: ServerProcess) -> None:
    result = run_modal(server, "run", str(EPHEMERAL), "--marker", "done1")
    assert result.returncode == 0, result.output
    # Container stdout and stderr stream back to `modal run`.
    assert "STDOUT-done1" in result.output
    assert "STDERR-done1" in result.output
    pid = server.container_pid(result_of(result.stdout))
    app_id = app_id_in(result.output)

    row = app_row(server, app_id)
    assert row["state"] == "stopped", row
    assert row["stopped_at"], row
    assert row["tasks"] == "0", row
    # The function's scaledown window is 60s: the container is gone because the app stopped.
    assert wait_for(lambda: not pid_alive(pid), 10), f"container process {pid} outlived its app"


def test_interrupted_run_stops_app_and_its_containers(server: ServerProcess) -> None:
    before = set(server.container_pids())
    proc = start_run(server, "sigint1", sleep=120)
    try:
        started = server.wait_new_container(before, 60)
        assert started, f"the function's container never started:\n{end(proc)}"
        pid = started[1]
        time.sleep(1.0)  # the input reaches the container
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        out = end(proc)
        app_id = app_id_in(out)
        assert wait_for(lambda: not pid_alive(pid), 10), f"container {pid} still runs after the client left"
        assert app_row(server, app_id)["state"] == "stopped"
    finally:
        end(proc)


def test_killed_client_app_is_stopped_by_heartbeat_timeout(fresh_server: ServerProcess) -> None:
    fresh_server.extra_args.extend(["--app-heartbeat-timeout", "3"])
    fresh_server.start()
    # The client heartbeats every second, well inside the server's 3s timeout.
    proc = start_run(fresh_server, "kill1", sleep=120, MODAL_HEARTBEAT_INTERVAL="1")
    try:
        started = fresh_server.wait_new_container(set(), 60)
        assert started, f"the function's container never started:\n{end(proc)}"
        pid = started[1]
        # While the client heartbeats, the app outlives the timeout.
        time.sleep(4.5)
        live = [a for a in app_list(fresh_server) if a["description"] == "e2e-apps-ephemeral"]
        assert len(live) == 1 and live[0]["state"] == "ephemeral", live
        assert live[0]["tasks"] == "1", live
        assert pid_alive(pid)
        app_id = live[0]["app_id"]

        proc.send_signal(signal.SIGKILL)  # no goodbye: only the missing heartbeats tell
        proc.wait(10)
        stopped = wait_for(lambda: app_row(fresh_server, app_id)["state"] == "stopped", 20, interval=0.5)
        assert stopped, app_row(fresh_server, app_id)
        assert wait_for(lambda: not pid_alive(pid), 10), f"container {pid} outlived its abandoned app"
    finally:
        end(proc)


# ---------------------------------------------------------------- deployed apps
@pytest.fixture(scope="module")
def deployed(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A deployed app, looked up by name by the tests below."""
    name = "e2e-apps-lookup"
    deploy(server, app_copy(tmp_path_factory.mktemp("deployed"), name, "v1"))
    yield name


def test_function_and_cls_from_name_work_from_another_process(server: ServerProcess, deployed: str) -> None:
    assert client(server, "call", deployed, "hello", "ann") == "v1:ann"
    assert client(server, "cls", deployed, "Greeter", "greet", "bo") == "greet-v1:bo"


def test_unknown_app_or_function_raises_not_found(server: ServerProcess, deployed: str) -> None:
    errors = client(server, "missing", deployed)
    for what in ("app", "function", "cls", "app_lookup"):
        assert errors[what]["type"] == "NotFoundError", (what, errors[what])


def test_app_list_and_logs_show_deployed_app(server: ServerProcess, deployed: str) -> None:
    assert client(server, "call", deployed, "hello", "logmarker") == "v1:logmarker"
    rows = [a for a in app_list(server) if a["description"] == deployed]
    assert [r["state"] for r in rows] == ["deployed"], rows

    def logs(*args: str) -> str:
        result = run_modal(server, "app", "logs", deployed, *args, timeout=30)
        assert result.returncode == 0, result.output
        return result.stdout

    found = wait_for(lambda: "OUTLOG-v1-logmarker" in logs() and "ERRLOG-v1-logmarker" in logs(), 10, 0.5)
    assert found, "container stdout or stderr missing from `modal app logs`"
    only_stderr = logs("--source", "stderr")
    assert "ERRLOG-v1-logmarker" in only_stderr and "OUTLOG-v1-logmarker" not in only_stderr, only_stderr


def test_redeploy_replaces_code_and_bumps_version(server: ServerProcess, tmp_path: Path) -> None:
    name = "e2e-apps-redeploy"
    first = deploy(server, app_copy(tmp_path, name, "v1"))
    assert client(server, "call", name, "hello", "x") == "v1:x"
    assert client(server, "cls", name, "Greeter", "greet", "y") == "greet-v1:y"

    second = deploy(server, app_copy(tmp_path, name, "v2"))
    assert second == first, "a redeploy keeps the app's id"
    # The new code answers, even though a warm v1 container (60s scaledown window) was there.
    assert client(server, "call", name, "hello", "x") == "v2:x"
    assert client(server, "cls", name, "Greeter", "greet", "y") == "greet-v2:y"

    rows = [a for a in app_list(server) if a["description"] == name]
    assert [r["state"] for r in rows] == ["deployed"], rows

    history = run_modal(server, "app", "history", name, "--json")
    assert history.returncode == 0, history.output
    versions = [row["version"] for row in json.loads(history.stdout)]
    assert versions == ["v2", "v1"], versions


def test_app_stop_stops_deployed_app_and_its_containers(server: ServerProcess, tmp_path: Path) -> None:
    name = "e2e-apps-stop"
    app_id = deploy(server, app_copy(tmp_path, name, "v1"))
    pid = server.container_pid(client(server, "call", name, "task_id"))
    assert pid_alive(pid)
    assert app_row(server, app_id)["tasks"] == "1"

    stop = run_modal(server, "app", "stop", name, "--yes")
    assert stop.returncode == 0, stop.output
    row = app_row(server, app_id)
    assert row["state"] == "stopped", row
    assert wait_for(lambda: not pid_alive(pid), 10), f"container {pid} outlived `modal app stop`"

    error = client(server, "call-error", name, "hello")
    assert error["type"] == "NotFoundError", error


def test_detached_run_keeps_working_after_the_client_exits(server: ServerProcess, tmp_path: Path) -> None:
    """`modal run --detach`: the app outlives its client, so a spawned call still finishes."""
    app = tmp_path / "detached.py"
    app.write_text(
        "import time\n"
        "import modal\n"
        'app = modal.App("e2e-apps-detached")\n'
        "@app.function()\n"
        "def slow() -> None:\n"
        "    time.sleep(2)\n"
        '    print("DETACHED-CALL-DONE", flush=True)\n'
        "@app.local_entrypoint()\n"
        "def main() -> None:\n"
        "    slow.spawn()\n"
    )
    result = run_modal(server, "run", "--detach", str(app))
    assert result.returncode == 0, result.output
    # The leaving client's log stream ends at once instead of timing out.
    assert "Timed out waiting for final app logs" not in result.output
    app_id = app_id_in(result.output)

    def finished() -> bool:
        return "DETACHED-CALL-DONE" in run_modal(server, "app", "logs", app_id, timeout=30).stdout

    assert wait_for(finished, 20, 0.5), "the spawned call did not finish after the client exited"


def test_serve_runs_an_app_until_its_timeout_with_its_web_endpoints(
    server: ServerProcess, tmp_path: Path
) -> None:
    plain = tmp_path / "served.py"
    plain.write_text(
        "import modal\n\napp = modal.App('e2e-served')\n\n\n@app.function()\ndef hello(x: int) -> int:\n"
        "    return x + 1\n"
    )
    served = run_modal(server, "serve", str(plain), "--timeout", "4", timeout=90)
    assert served.returncode == 0, served.output
    assert "Created Function hello" in served.output and "Serving..." in served.output
    app_id = _APP_ID.findall(served.output)[0]
    assert app_row(server, app_id)["state"] == "stopped"  # `modal serve` runs an ephemeral app

    web = tmp_path / "served_web.py"
    web.write_text(
        "import modal\n\napp = modal.App('e2e-served-web')\n\n\n@app.function()\n@modal.fastapi_endpoint()\n"
        "def page() -> str:\n    return 'hi'\n"
    )
    served_web = run_modal(server, "serve", str(web), "--timeout", "4", timeout=90)
    assert served_web.returncode == 0, served_web.output
    assert "/e2e-served-web-page-dev" in served_web.output, served_web.output  # an app not deployed: -dev
