"""`modal container list/logs/exec/stop` and `modal shell <container id>`: the real CLI, a real server."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, ServerProcess, results, run_modal, run_python, wait_for

APPS = REPO / "tests" / "e2e" / "apps"
APP = APPS / "container_cli.py"
CLIENT = APPS / "container_cli_client.py"
APP_NAME = "e2e-container-cli"
MADE_UP = "ta-AAAAAAAAAAAAAAAAAAAAAA"


# ---------------------------------------------------------------- helpers
def call(server: ServerProcess, function: str, arg: str) -> dict[str, Any]:
    result = run_python(server, CLIENT, "call", function, arg)
    assert result.returncode == 0, result.output
    found: dict[str, Any] = results(result)["call"]
    return found


def keeper(server: ServerProcess, marker: str = "") -> dict[str, str]:
    """Call the warm function; returns its container's id and working directory."""
    value: dict[str, str] = call(server, "keeper", marker or uuid.uuid4().hex)["value"]
    return value


def container_list(server: ServerProcess, *args: str) -> list[dict[str, str]]:
    result = run_modal(server, "container", "list", "--json", *args)
    assert result.returncode == 0, result.output
    rows: list[dict[str, str]] = json.loads(result.stdout)
    return rows


def listed(server: ServerProcess, task_id: str) -> bool:
    return any(row["container_id"] == task_id for row in container_list(server))


def drive_pty(
    argv: list[str], env: dict[str, str], script: list[tuple[str, bytes]], timeout: float = 60.0
) -> tuple[int, str]:
    """Run argv on a pseudo-terminal of 40x120; each time a pattern of `script` matches the output (in
    order), type its keys. Returns the exit code and everything printed to the terminal."""
    master, slave = pty.openpty()
    termios.tcsetwinsize(slave, (40, 120))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    output = b""
    searched = 0
    steps = list(script)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the CLI has exited and closed the terminal
                    break
                if not data:
                    break
                output += data
            elif proc.poll() is not None:
                break
            if steps:
                match = re.search(steps[0][0].encode(), output[searched:])
                if match:
                    searched += match.end()
                    os.write(master, steps.pop(0)[1])
        rc = proc.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
    assert not steps, (
        f"the terminal never showed {steps[0][0]!r}; it showed:\n{output.decode(errors='replace')}"
    )
    return rc, output.decode(errors="replace")


@pytest.fixture(scope="module")
def deployed(server: ServerProcess) -> Iterator[str]:
    """The deployed test app (its `keeper` function keeps one container up); yields its app id."""
    result = run_modal(server, "deploy", str(APP))
    assert result.returncode == 0, result.output
    app_id = re.search(r"/apps/(ap-\w+)", result.output)
    assert app_id, result.output
    yield app_id.group(1)
    run_modal(server, "app", "stop", APP_NAME)


# ---------------------------------------------------------------- list and logs
def test_list_shows_live_containers(server: ServerProcess, deployed: str) -> None:
    task_id = keeper(server)["task_id"]
    rows = container_list(server)
    row = next((r for r in rows if r["container_id"] == task_id), None)
    assert row is not None, rows
    assert row["app_id"] == deployed and row["app_name"] == APP_NAME, row
    assert row["start_time"] and row["start_time"] != "Pending", row
    # Filtered by app: this app's containers only.
    assert {r["app_id"] for r in container_list(server, "--app-id", deployed)} == {deployed}
    assert container_list(server, "--app-id", "ap-AAAAAAAAAAAAAAAAAAAAAA") == []
    # `modal app list` counts the app's containers from the same data.
    apps = json.loads(run_modal(server, "app", "list", "--json").stdout)
    app_row = next(a for a in apps if a["app_id"] == deployed)
    assert int(app_row["tasks"]) >= 1, app_row


def test_logs_fetch_one_containers_output(server: ServerProcess, deployed: str) -> None:
    marker = uuid.uuid4().hex
    task_id = keeper(server, marker)["task_id"]

    def logs(*args: str) -> str:
        result = run_modal(server, "container", "logs", task_id, *args)
        assert result.returncode == 0, result.output
        return result.stdout

    everything = logs()
    assert f"OUT-{marker}" in everything and f"ERR-{marker}" in everything, everything
    stderr_only = logs("--source", "stderr")
    assert f"ERR-{marker}" in stderr_only and f"OUT-{marker}" not in stderr_only, stderr_only
    last = [line for line in logs("--tail", "1").splitlines() if line.strip()]
    assert len(last) == 1 and marker in last[0], last
    # A time range without --tail counts entries per time bucket first (AppCountLogs), then fetches them.
    ranged = logs("--since", "10m")
    assert f"OUT-{marker}" in ranged and f"ERR-{marker}" in ranged, ranged
    stamped = logs("--all", "--timestamps")
    assert re.search(rf"\d\d:\d\d:\d\d\S*\s+OUT-{marker}", stamped), stamped


# ---------------------------------------------------------------- exec
def test_exec_runs_in_the_containers_environment(server: ServerProcess, deployed: str) -> None:
    info = keeper(server)
    task_id = info["task_id"]
    echo = run_modal(server, "container", "exec", task_id, "echo", "hello", "from", "exec")
    assert echo.returncode == 0, echo.output
    assert echo.stdout == "hello from exec\n", echo.output
    env = run_modal(server, "container", "exec", task_id, "env")
    assert env.returncode == 0, env.output
    assert f"MODAL_TASK_ID={task_id}" in env.stdout.splitlines(), env.stdout
    assert "CLI_TEST_SECRET=from-the-secret" in env.stdout.splitlines(), "the container's secrets are missing"
    pwd = run_modal(server, "container", "exec", task_id, "pwd")
    assert pwd.returncode == 0, pwd.output
    assert pwd.stdout.strip() == info["cwd"], (pwd.stdout, info["cwd"])
    both = run_modal(server, "container", "exec", task_id, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert "out" in both.stdout and "err" in both.stdout, both.output


def test_exec_reports_the_exit_status(server: ServerProcess, deployed: str) -> None:
    """The exit code reaches the client (whose `modal container exec` prints the output, not the code)."""
    task_id = keeper(server)["task_id"]

    def status(*command: str) -> dict[str, Any]:
        result = run_python(server, CLIENT, "exec", task_id, *command)
        assert result.returncode == 0, result.output
        found: dict[str, Any] = results(result)["exec"]
        return found

    failed = status("sh", "-c", "echo out; echo err >&2; exit 3")
    assert failed == {"code": 3, "stdout": "out\n", "stderr": "err\n"}, failed
    assert status("true")["code"] == 0
    killed = status("sh", "-c", "kill -TERM $$")
    assert killed["code"] == 128 + 15, killed


def test_exec_with_a_pty(server: ServerProcess, deployed: str) -> None:
    task_id = keeper(server)["task_id"]
    command = "echo ready; read answer; echo got-$answer; tty; stty size; exit 7"
    rc, output = drive_pty(
        [sys.executable, "-m", "modal", "container", "exec", "--pty", task_id, "--", "sh", "-c", command],
        server.env(),
        [("ready", b"hello\r")],
    )
    assert rc == 0, output
    assert "got-hello" in output and "/dev/pts/" in output, output
    assert "40 120" in output, "the terminal size did not reach the container's PTY"


@pytest.mark.skipif(
    shutil.which("bash") is None, reason="`modal shell` runs /bin/bash, which is not installed"
)
def test_modal_shell_into_a_running_container(server: ServerProcess, deployed: str) -> None:
    task_id = keeper(server)["task_id"]
    rc, output = drive_pty(
        [sys.executable, "-m", "modal", "shell", task_id],
        server.env(),
        [(r"[#$] $", b"echo MARK-$((6*7)); tty\r"), (r"MARK-42", b"exit\r")],
    )
    assert rc == 0, output
    assert "MARK-42" in output and "/dev/pts/" in output, output


def test_unknown_and_bad_ids_are_clear(server: ServerProcess, deployed: str) -> None:
    for args in (
        ("container", "exec", MADE_UP, "echo", "hi"),
        ("container", "logs", MADE_UP),
        ("container", "logs", "-f", MADE_UP),
        ("container", "stop", "-y", MADE_UP),
        ("shell", MADE_UP),
    ):
        result = run_modal(server, *args, timeout=60)
        assert result.returncode != 0, (args, result.output)
        assert f"{MADE_UP}" in result.output and "not found" in result.output, (args, result.output)
        assert "Traceback" not in result.output, (args, result.output)
    task_id = keeper(server)["task_id"]
    missing = run_modal(server, "container", "exec", task_id, "no-such-command-here")
    assert missing.returncode != 0
    assert "Cannot run 'no-such-command-here'" in missing.output, missing.output


# ---------------------------------------------------------------- stop
def test_logs_follow_ends_when_the_container_stops(server: ServerProcess, deployed: str) -> None:
    task_id = keeper(server)["task_id"]
    marker = uuid.uuid4().hex
    follow = subprocess.Popen(
        [sys.executable, "-m", "modal", "container", "logs", "-f", task_id],
        env=server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(2)  # it is following
        assert keeper(server, marker)["task_id"] == task_id
        stop = run_modal(server, "container", "stop", "-y", task_id)
        assert stop.returncode == 0, stop.output
        output, _ = follow.communicate(timeout=20)  # it ends by itself once the container has stopped
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.communicate(10)
    assert follow.returncode == 0, output
    assert f"OUT-{marker}" in output and f"ERR-{marker}" in output, output
    # Gone from the list; its logs stay readable; stopping it again says it is stopped.
    assert wait_for(lambda: not listed(server, task_id), 10), "the stopped container is still listed"
    logs = run_modal(server, "container", "logs", task_id)
    assert logs.returncode == 0 and f"OUT-{marker}" in logs.stdout, logs.output
    again = run_modal(server, "container", "stop", "-y", task_id)
    assert again.returncode != 0 and "already stopped" in again.output, again.output
    stopped_exec = run_modal(server, "container", "exec", task_id, "echo", "hi")
    assert stopped_exec.returncode != 0 and "has stopped" in stopped_exec.output, stopped_exec.output
    # min_containers brings up a replacement.
    assert keeper(server)["task_id"] != task_id


def _start_slow(server: ServerProcess, app_id: str, seconds: float) -> tuple[subprocess.Popen[str], str]:
    """Call `slow` in the background; returns the caller and the container that runs the call."""
    marker = uuid.uuid4().hex
    caller = subprocess.Popen(
        [sys.executable, str(CLIENT), "call", "slow", marker, str(seconds)],
        cwd=APPS,
        env=server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def running() -> str:
        for row in container_list(server, "--app-id", app_id):
            logs = run_modal(server, "container", "logs", row["container_id"]).stdout
            if f"slow started {marker}" in logs:
                return row["container_id"]
        return ""

    task_id = wait_for(running, 60, interval=0.5)
    if not task_id:
        caller.kill()
        pytest.fail(f"the slow call did not start: {caller.communicate(10)[0]}")
    return caller, task_id


def _stop_during_call(server: ServerProcess, caller: subprocess.Popen[str], *stop_args: str) -> Any:
    """`modal container stop` while the caller's slow call runs; then the call's result."""
    try:
        stop = run_modal(server, "container", "stop", "-y", *stop_args)
        assert stop.returncode == 0, stop.output
        output, _ = caller.communicate(timeout=90)
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.communicate(10)
    assert caller.returncode == 0, output
    return json.loads(output.split("RESULT call ", 1)[1].splitlines()[0])


def test_stop_moves_running_inputs_to_another_container(server: ServerProcess, deployed: str) -> None:
    caller, task_id = _start_slow(server, deployed, 6)
    ran_on = _stop_during_call(server, caller, task_id)
    assert ran_on["value"] != task_id, "the stopped container's input was not run again elsewhere"
    assert ran_on["seconds"] > 6, ran_on
    assert not listed(server, task_id)


def test_graceful_stop_finishes_running_inputs(server: ServerProcess, deployed: str) -> None:
    caller, task_id = _start_slow(server, deployed, 5)
    ran_on = _stop_during_call(server, caller, "--graceful", task_id)
    assert ran_on["value"] == task_id, "a graceful stop must let the container finish its input"
    assert wait_for(lambda: not listed(server, task_id), 15), "the drained container did not end"


# ---------------------------------------------------------------- sandboxes
def test_modal_shell_of_a_function_is_refused(server: ServerProcess, deployed: str, tmp_path: Path) -> None:
    """`modal shell app.py::fn` creates a sandbox, which Onshore does not support: a clear error, no hang."""
    for env in ({}, {"MODAL_SANDBOX_V2": "0"}):  # the client's two sandbox protocols
        result = run_modal(
            server,
            "shell",
            f"{APP}::keeper",
            "-c",
            "echo hi",
            env=server.env(**env),
            cwd=tmp_path,
            timeout=120,
        )
        assert result.returncode != 0, result.output
        assert "sandboxes (modal.Sandbox" in result.output and "not supported" in result.output, result.output
        assert "Traceback" not in result.output, result.output
    apps = json.loads(run_modal(server, "app", "list", "--json").stdout)
    assert all(a["state"] == "stopped" for a in apps if a["description"] == "modal shell"), apps
