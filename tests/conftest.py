"""Shared fixtures: a real Onshore server subprocess on loopback, and helpers to drive the real client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Status
from modal_proto import api_grpc

REPO = Path(__file__).resolve().parent.parent


@dataclass
class ServerProcess:
    """An `onshore server` subprocess with its own data dir; stop() ends it and every container it started."""

    data_dir: Path
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    log_path: Path | None = None
    server_env: dict[str, str] = field(default_factory=dict)  # set for the server process only
    wrapper: list[str] = field(default_factory=list)  # a command the server runs under (e.g. unshare)

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            [
                *self.wrapper,
                sys.executable,
                "-m",
                "onshore.cli.main",
                "server",
                "--data-dir",
                str(self.data_dir),
                "--port",
                "0",
                *self.extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**clean_env(), **self.server_env},
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line or self.proc.poll() is not None:
                break
        if "ready at" not in line:
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}; log: {self.log_text()[-3000:]}")
        self.url = line.strip().rsplit(" ", 1)[1]
        return self

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def container_pids(self) -> dict[str, int]:
        """Every container this server started, by task id: its host pid, from the server's log.

        Containers run in their own pid namespace, so a pid seen inside one means nothing on the host;
        tests name a container by its MODAL_TASK_ID and ask the server's log for its process.
        """
        found = re.finditer(r"started container (ta-[A-Za-z0-9]+) \(pid (\d+)\)", self.log_text())
        return {m[1]: int(m[2]) for m in found}

    def container_pid(self, task_id: str, timeout: float = 10.0) -> int:
        pid: int | None = wait_for(lambda: self.container_pids().get(task_id), timeout, 0.1)
        assert pid, f"the server never logged starting container {task_id}"
        return pid

    def wait_new_container(self, before: set[str], timeout: float) -> tuple[str, int] | None:
        """The first container started that is not in `before` (task ids), once the server logs it."""

        def new() -> tuple[str, int] | None:
            return next(((t, p) for t, p in self.container_pids().items() if t not in before), None)

        found: tuple[str, int] | None = wait_for(new, timeout, 0.1)
        return found

    @property
    def token(self) -> dict[str, str]:
        data: dict[str, str] = json.loads((self.data_dir / "token.json").read_text())
        return data

    @property
    def token_metadata(self) -> dict[str, str]:
        """The gRPC metadata of a client holding this server's first token (for raw gRPC calls)."""
        return {
            "x-modal-token-id": self.token["token_id"],
            "x-modal-token-secret": self.token["token_secret"],
        }

    def env(self, **extra: str) -> dict[str, str]:
        env = clean_env()
        env.update(
            MODAL_SERVER_URL=self.url,
            MODAL_TOKEN_ID=self.token["token_id"],
            MODAL_TOKEN_SECRET=self.token["token_secret"],
        )
        env.update(extra)
        return env

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode


@contextlib.asynccontextmanager
async def raw_stub(server: ServerProcess) -> AsyncIterator[api_grpc.ModalClientStub]:
    host, port = server.url.split("//", 1)[1].rsplit(":", 1)
    channel = Channel(host, int(port))
    try:
        yield api_grpc.ModalClientStub(channel)
    finally:
        channel.close()


async def raw_status(
    server: ServerProcess, method: Any, request: Any, timeout: float = 15.0
) -> tuple[Status, str]:
    """(status, message) of one raw gRPC call with the server's token, without the client's retries."""
    try:
        await asyncio.wait_for(method(request, metadata=server.token_metadata), timeout)
    except GRPCError as exc:
        return exc.status, exc.message or ""
    return Status.OK, ""


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll until predicate() is truthy; return its last value (falsy on timeout)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def clean_env() -> dict[str, str]:
    """The test process's environment without any MODAL_* settings of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _run(argv: list[str], cwd: Path | None, timeout: float, env: dict[str, str]) -> Result:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_modal(
    server: ServerProcess,
    *args: str,
    cwd: Path | None = None,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
) -> Result:
    """Run the real `modal` CLI against the server."""
    return _run([sys.executable, "-m", "modal", *args], cwd, timeout, env or server.env())


def run_python(
    server: ServerProcess,
    script: Path,
    *args: str,
    cwd: Path | None = None,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
) -> Result:
    """Run a Python script that uses the real client's Python API against the server."""
    return _run([sys.executable, str(script), *args], cwd or script.parent, timeout, env or server.env())


def results(result: Result) -> dict[str, Any]:
    """The `RESULT <tag> <json>` lines an app printed, by tag."""
    found: dict[str, Any] = {}
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            _, tag, payload = line.split(" ", 2)
            found[tag] = json.loads(payload)
    return found


def write_app(directory: Path, name: str, source: str) -> Path:
    """Write a dedented app file and return its path."""
    path = directory / name
    path.write_text(textwrap.dedent(source).lstrip())
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by the tests of a session that do not need a server of their own."""
    proc = ServerProcess(tmp_path_factory.mktemp("onshore") / "data").start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own (for restarts, auth changes, or settings)."""
    proc = ServerProcess(tmp_path / "data")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test` runs two workers), the docker tests share one worker: they share one
    private dockerd, whose cached data root only one daemon may hold."""
    for item in items:
        if item.nodeid.startswith("tests/docker/"):
            item.add_marker(pytest.mark.xdist_group("docker"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say once, at the end, why the docker runtime's tests were skipped and how to run them."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if r.nodeid.startswith("tests/docker/")]
    if not skipped:
        return
    longrepr = skipped[0].longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ").splitlines()[0]
    terminalreporter.write_line(
        f"{len(skipped)} docker runtime tests skipped: {reason}. To run them, install what they need "
        "(as root: bash .ci/setup-docker.sh) and run make test again."
    )
