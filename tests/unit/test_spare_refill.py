"""Spare processes: started once the API socket they bind exists; one that fails to start is started again."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from onshore.config import ServerConfig
from onshore.runtimes.base import Backend, host_resources
from onshore.runtimes.fake import FakeRuntime
from onshore.runtimes.process.runtime import Proc, ProcessRuntime
from onshore.runtimes.process.sandbox import SandboxError, SandboxSpec, Support
from onshore.runtimes.pyenv import ClientEnvironments
from onshore.server import OnshoreServer
from tests.unit.test_images import FakeBuilder


class _FlakyRuntime(ProcessRuntime):
    """Spares are plain local processes waiting on stdin; the first `failures` starts fail."""

    spare_retry_delay = 0.05

    def __init__(self, state_dir: Path, failures: int) -> None:
        super().__init__(
            state_dir, ClientEnvironments(state_dir / "envs"), 4, spares=2, sandbox=Support("root")
        )
        self.failures = failures
        self.attempts = 0

    async def _spawn_boxed(self, box: SandboxSpec, argv: list[str], scratch: Path, stdin: int) -> Proc:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise SandboxError("bind source /nonexistent/api.sock does not exist")
        program = "import sys; sys.stdin.read()"
        return await self._spawn(sys.executable, ["-c", program], {}, str(scratch.parent), stdin)


async def _pool_size(runtime: ProcessRuntime, want: int, timeout: float) -> int:
    pool = runtime._image_spares.get(runtime._default_key, [])
    deadline = asyncio.get_running_loop().time() + timeout
    while len(pool) < want and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    return len(pool)


async def test_a_failed_spare_start_is_retried(tmp_path: Path) -> None:
    runtime = _FlakyRuntime(tmp_path / "state", failures=2)
    try:
        runtime.warm_up()
        assert await _pool_size(runtime, 2, 5.0) == 2
        assert runtime.attempts == 4  # two failed starts, each tried again
        assert runtime._default_starting == 0
    finally:
        await runtime.shutdown()


async def test_a_spare_that_never_starts_is_given_up_after_a_few_tries(tmp_path: Path) -> None:
    runtime = _FlakyRuntime(tmp_path / "state", failures=1000)
    try:
        runtime.warm_up()
        assert await _pool_size(runtime, 1, 1.5) == 0
        attempts = runtime.attempts
        assert 2 <= attempts <= 8, attempts  # a few tries for each of the two spares, then no more
        await asyncio.sleep(0.5)
        assert runtime.attempts == attempts and runtime._default_starting == 0
    finally:
        await runtime.shutdown()


class _SocketWatchingRuntime(FakeRuntime):
    """Records whether the server's API socket existed when the server started its spares."""

    def __init__(self, socket: Path) -> None:
        super().__init__()
        self.socket = socket
        self.socket_at_warm_up: list[bool] = []

    def warm_up(self) -> None:
        self.socket_at_warm_up.append(self.socket.exists())


async def test_the_server_starts_spares_once_their_socket_exists(tmp_path: Path) -> None:
    data = tmp_path / "d"  # a short path: the API socket is made only under 100 characters
    runtime = _SocketWatchingRuntime(data / "sock" / "api.sock")
    backend = Backend(runtime, FakeBuilder(), [host_resources()])
    server = OnshoreServer(ServerConfig(data_dir=data, port=0), backend)
    assert server.socket_path is not None
    await server.start()
    try:
        assert runtime.socket_at_warm_up == [True]
    finally:
        await server.stop()
