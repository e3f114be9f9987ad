"""The `onshore` command line: run/deploy with a background server, status, stop and token management."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from onshore.cli.embedded import pid_alive
from tests.conftest import REPO, Result, ServerProcess, clean_env, run_modal, write_app


@dataclass
class Home:
    """A temporary ONSHORE_HOME; the pids seen in it are killed at teardown if still alive."""

    root: Path
    pids: set[int] = field(default_factory=set)

    def onshore(self, *args: str, timeout: float = 120.0, cwd: Path | None = None) -> Result:
        env = clean_env()
        env["ONSHORE_HOME"] = str(self.root)
        proc = subprocess.run(
            [sys.executable, "-m", "onshore.cli.main", *args],
            cwd=cwd or REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.remember_server()
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def server_info(self) -> dict[str, object] | None:
        path = self.root / "server.json"
        return json.loads(path.read_text()) if path.exists() else None

    def server_pid(self) -> int:
        info = self.server_info()
        assert info is not None, "no server.json"
        pid = info["pid"]
        assert isinstance(pid, int)
        return pid

    def remember_server(self) -> None:
        info = self.server_info()
        pid = info.get("pid") if info else None
        if isinstance(pid, int):
            self.pids.add(pid)

    def client_env(self) -> dict[str, str]:
        """The variables `onshore env` prints, applied to a clean environment."""
        result = self.onshore("env")
        assert result.returncode == 0, result.output
        env = clean_env()
        for key, value in re.findall(r"^export (MODAL_\w+)=(\S+)$", result.stdout, re.M):
            env[key] = value
        return env


def children(pid: int) -> list[int]:
    """Direct children of pid: the server's containers."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
                if fields[1] == str(pid):
                    found.append(int(entry.name))
    return found


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if pid_alive(p)]
    return alive


def _ours(pid: int) -> bool:
    """Guard against pid reuse: only an onshore server or a container of one is killed."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"onshore.cli.main" in cmdline or b"modal._container_entrypoint" in cmdline


@pytest.fixture(autouse=True)
def home(tmp_path: Path) -> Iterator[Home]:
    h = Home(tmp_path / "onshore-home")
    try:
        yield h
    finally:
        h.onshore("stop", timeout=60)
        for pid in sorted(h.pids):
            if pid_alive(pid) and _ours(pid):
                for kill in (os.killpg, os.kill):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        kill(pid, signal.SIGKILL)


HELLO = str(REPO / "examples" / "hello_world.py")


def test_run_starts_a_background_server_and_reuses_it(home: Home, tmp_path: Path) -> None:
    first = home.onshore("run", HELLO)
    assert first.returncode == 0, first.output
    assert "square(7) = 49" in first.output
    assert "squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in first.output
    assert "Started an Onshore server" in first.stderr
    pid = home.server_pid()
    assert pid_alive(pid)
    assert (home.root / "server.log").exists()
    # The server outlives the command that started it, in a session of its own.
    assert os.getsid(pid) == pid

    # Onshore's options first, then everything (modal's own options too) goes to `modal run` unchanged.
    app = write_app(
        tmp_path,
        "cli_args_app.py",
        """
        import modal

        app = modal.App("cli-args-app")

        @app.function()
        def double(x: int) -> int:
            return 2 * x

        @app.local_entrypoint()
        def main(n: int = 1, code: int = 0):
            print("double =", double.remote(n))
            raise SystemExit(code)
        """,
    )
    second = home.onshore("run", "--data-dir", str(home.root), "-q", str(app), "--n", "21")
    assert second.returncode == 0, second.output
    assert "double = 42" in second.output
    assert "Started an Onshore server" not in second.stderr
    assert home.server_pid() == pid

    # The client's exit code is the command's.
    third = home.onshore("run", str(app), "--n", "1", "--code", "7")
    assert third.returncode == 7, third.output
    assert home.server_pid() == pid

    status = home.onshore("status")
    assert status.returncode == 0, status.output
    assert f"pid {pid}" in status.stdout
    info = home.server_info()
    assert info is not None and str(info["url"]) in status.stdout
    assert re.search(r"ap-\w+\s+hello-world\s+stopped\s+0", status.stdout), status.stdout
    assert "cli-args-app" in status.stdout

    stop = home.onshore("stop")
    assert stop.returncode == 0, stop.output
    assert "stopped" in stop.stdout
    assert wait_gone([pid], 1.0) == [], "`onshore stop` returned before the server exited"
    assert not (home.root / "server.json").exists()

    again = home.onshore("stop")
    assert again.returncode == 0
    assert "No Onshore server is running" in again.stdout
    down = home.onshore("status")
    assert down.returncode == 3
    assert "No Onshore server is running" in down.stdout


def test_deploy_then_from_name_and_stop_ends_containers(home: Home, tmp_path: Path) -> None:
    # Tokens made before any server ran: the server must still start, and `onshore env` still work.
    created = home.onshore("token", "create", "--label", "early")
    assert created.returncode == 0, created.output

    app = write_app(
        tmp_path,
        "cli_deployed.py",
        """
        import modal

        app = modal.App("cli-deployed-app")

        @app.function(scaledown_window=60)
        def triple(x: int) -> int:
            return 3 * x
        """,
    )
    deploy = home.onshore("deploy", str(app))
    assert deploy.returncode == 0, deploy.output
    pid = home.server_pid()

    script = write_app(
        tmp_path,
        "call_deployed.py",
        """
        import modal

        f = modal.Function.from_name("cli-deployed-app", "triple")
        print("triple =", f.remote(14))
        """,
    )
    call = subprocess.run(
        [sys.executable, str(script)], env=home.client_env(), capture_output=True, text=True, timeout=120
    )
    assert call.returncode == 0, call.stdout + call.stderr
    assert "triple = 42" in call.stdout

    # The warm container is listed, under its app.
    status = home.onshore("status")
    assert status.returncode == 0, status.output
    assert re.search(r"ap-\w+\s+cli-deployed-app\s+deployed\s+1", status.stdout), status.stdout
    assert re.search(r"ta-\w+\s+ap-\w+\s+cli-deployed-app", status.stdout), status.stdout

    containers = children(pid)
    assert containers, "expected a warm container process under the server"
    home.pids.update(containers)

    stop = home.onshore("stop")
    assert stop.returncode == 0, stop.output
    assert wait_gone([pid], 1.0) == []
    assert wait_gone(containers, 5.0) == [], "container processes outlived `onshore stop`"


def test_concurrent_runs_share_one_server(home: Home, tmp_path: Path) -> None:
    app = write_app(
        tmp_path,
        "cli_local_only.py",
        """
        import modal

        app = modal.App("cli-local-only")

        @app.local_entrypoint()
        def main():
            print("local entrypoint ran")
        """,
    )
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: home.onshore("run", str(app)), range(2)))
    for result in results:
        assert result.returncode == 0, result.output
        assert "local entrypoint ran" in result.output
    assert sum("Started an Onshore server" in r.stderr for r in results) == 1


def _token_pair(output: str) -> tuple[str, str]:
    token_id = re.search(r"^export MODAL_TOKEN_ID=(\S+)$", output, re.M)
    secret = re.search(r"^export MODAL_TOKEN_SECRET=(\S+)$", output, re.M)
    assert token_id and secret, output
    return token_id.group(1), secret.group(1)


def test_token_create_list_revoke(fresh_server: ServerProcess, home: Home) -> None:
    server = fresh_server.start()
    data = ["--data-dir", str(server.data_dir)]

    created = home.onshore("token", "create", "--label", "ci-bot", *data)
    assert created.returncode == 0, created.output
    token_id, secret = _token_pair(created.stdout)
    assert secret in created.stdout

    listed = home.onshore("token", "list", *data)
    assert listed.returncode == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if token_id in line)
    assert "ci-bot" in row and row.rstrip().endswith("-")  # not revoked
    assert server.token["token_id"] in listed.stdout
    assert secret not in listed.stdout

    as_new = server.env(MODAL_TOKEN_ID=token_id, MODAL_TOKEN_SECRET=secret)
    ok = run_modal(server, "app", "list", env=as_new)
    assert ok.returncode == 0, ok.output

    revoked = home.onshore("token", "revoke", token_id, *data)
    assert revoked.returncode == 0, revoked.output
    revoked_at = time.monotonic()
    row = next(line for line in home.onshore("token", "list", *data).stdout.splitlines() if token_id in line)
    assert re.search(r"\d\d:\d\d:\d\d$", row.rstrip()), row

    refused = run_modal(server, "app", "list", env=as_new, timeout=30)
    while refused.returncode == 0 and time.monotonic() - revoked_at < 5:
        time.sleep(0.5)
        refused = run_modal(server, "app", "list", env=as_new, timeout=30)
    assert refused.returncode != 0, "a revoked token was still accepted after 5 seconds"
    assert "revoked" in refused.output.lower(), refused.output

    fresh = home.onshore("token", "create", *data)
    fresh_id, fresh_secret = _token_pair(fresh.stdout)
    works = run_modal(
        server, "app", "list", env=server.env(MODAL_TOKEN_ID=fresh_id, MODAL_TOKEN_SECRET=fresh_secret)
    )
    assert works.returncode == 0, works.output

    unknown = home.onshore("token", "revoke", "ak-doesnotexist", *data)
    assert unknown.returncode != 0
    assert "No token 'ak-doesnotexist'" in unknown.stderr


def test_token_commands_without_data(home: Home) -> None:
    listed = home.onshore("token", "list")
    assert listed.returncode != 0
    assert "No Onshore data" in listed.stderr
    assert not home.root.exists()


def test_an_unknown_runtime_is_refused_naming_the_backends(home: Home) -> None:
    refused = home.onshore("server", "--runtime", "ray", "--port", "0")
    assert refused.returncode == 1
    assert "--runtime 'ray' is not a backend here: choose one of process, docker" in refused.stderr
    assert not home.root.exists()  # refused before the data dir is made


def test_start_then_env_lets_a_plain_script_reach_the_embedded_server(home: Home, tmp_path: Path) -> None:
    # Before any server ran there is no token: `onshore env` says how to get one.
    before = home.onshore("env")
    assert before.returncode == 1 and "onshore start" in before.stderr, before.output
    assert home.onshore("status").returncode == 3  # documented: 3 when no server runs

    started = home.onshore("start")
    assert started.returncode == 0 and "Started an Onshore server at http://127.0.0.1:" in started.stdout
    again = home.onshore("start")
    assert again.returncode == 0 and "Already running:" in again.stdout, again.output
    assert home.server_pid() == int(re.findall(r"\(pid (\d+)\)", again.stdout)[0])

    script = write_app(
        tmp_path,
        "plain_script.py",
        """
        import modal

        app = modal.App("cli-plain-script")

        @app.function()
        def double(x: int) -> int:
            return 2 * x

        if __name__ == "__main__":
            with app.run():
                print("double =", double.remote(21))
        """,
    )
    call = subprocess.run(
        [sys.executable, str(script)], env=home.client_env(), capture_output=True, text=True, timeout=120
    )
    assert call.returncode == 0, call.stdout + call.stderr
    assert "double = 42" in call.stdout
    assert home.onshore("status").returncode == 0

    assert home.onshore("stop").returncode == 0
    stale = home.onshore("env")
    assert stale.returncode == 0 and "No Onshore server runs" in stale.stderr, stale.output
