"""A fake runtime for unit tests: records starts, stops and execs, and lets a test end containers."""

from __future__ import annotations

import asyncio

from onshore.errors import NotFound
from onshore.events import ExitSink, LogSink
from onshore.runtimes.base import (
    FD_STDERR,
    FD_STDOUT,
    Capabilities,
    ContainerSpec,
    ExecSpec,
)


class FakeExec:
    """A command "run" by the fake runtime: the test writes its output and ends it."""

    def __init__(self, task_id: str, spec: ExecSpec, pid: int) -> None:
        self.task_id, self.spec, self.pid = task_id, spec, pid
        self.stdin = bytearray()
        self.stdin_closed = False
        self.killed = False
        self._outputs: dict[int, asyncio.Queue[bytes]] = {
            fd: asyncio.Queue() for fd in (FD_STDOUT, FD_STDERR)
        }
        self._rc: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def emit(self, fd: int, data: bytes) -> None:
        self._outputs[fd].put_nowait(data)

    def exit(self, rc: int) -> None:
        if not self._rc.done():
            for queue in self._outputs.values():
                queue.put_nowait(b"")
            self._rc.set_result(rc)

    async def read(self, fd: int) -> bytes:
        return await self._outputs[fd].get()

    async def write(self, data: bytes) -> None:
        self.stdin += data

    async def close_stdin(self) -> None:
        self.stdin_closed = True

    async def wait(self) -> int:
        return await asyncio.shield(self._rc)

    def kill(self) -> None:
        self.killed = True
        self.exit(-9)


class FakeRuntime:
    name = "fake"

    def __init__(self, max_containers: int = 8) -> None:
        self.capabilities = Capabilities(max_containers=max_containers)
        self.started: list[ContainerSpec] = []
        self.stopped: list[str] = []
        self.execs: list[FakeExec] = []
        self._running: dict[str, ContainerSpec] = {}
        self._on_log: LogSink = lambda t, fd, s: None
        self._on_exit: ExitSink = lambda t, rc, detail: None
        # True: a stopped container ends only at finish_stop(), as a real one runs its @exit hooks first.
        self.slow_stops = False

    def bind(self, on_log: LogSink, on_exit: ExitSink) -> None:
        self._on_log, self._on_exit = on_log, on_exit

    def warm_up(self) -> None:
        return None

    async def start(self, spec: ContainerSpec) -> int:
        self.started.append(spec)
        self._running[spec.task_id] = spec
        return len(self.started)

    async def stop(self, task_id: str, grace: float) -> None:
        if task_id not in self._running or task_id in self.stopped:
            return
        self.stopped.append(task_id)
        if not self.slow_stops:
            self.finish_stop(task_id)

    def finish_stop(self, task_id: str) -> None:
        if self._running.pop(task_id, None) is not None:
            self._on_exit(task_id, -15, "")

    async def exec(self, task_id: str, spec: ExecSpec) -> FakeExec:
        if task_id not in self._running:
            raise NotFound(f"Container {task_id} is not running")
        process = FakeExec(task_id, spec, 1000 + len(self.execs))
        self.execs.append(process)
        return process

    def crash(self, task_id: str, returncode: int = -9) -> None:
        self._running.pop(task_id, None)
        self._on_exit(task_id, returncode, "")

    def emit(self, task_id: str, fd: int, text: str) -> None:
        self._on_log(task_id, fd, text)

    def running(self) -> list[str]:
        return list(self._running)

    async def namespace_pid(self, task_id: str) -> int | None:
        return None  # nothing to mount in

    async def shutdown(self) -> None:
        for task_id in list(self._running):
            await self.stop(task_id, 0)
