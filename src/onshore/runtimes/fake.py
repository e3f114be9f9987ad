"""A fake runtime for unit tests: records starts and stops, and lets a test end containers."""

from __future__ import annotations

from onshore.runtimes.base import Capabilities, ContainerSpec, ExitSink, LogSink


class FakeRuntime:
    name = "fake"

    def __init__(self, max_containers: int = 8) -> None:
        self.capabilities = Capabilities(max_containers=max_containers)
        self.started: list[ContainerSpec] = []
        self.stopped: list[str] = []
        self._running: dict[str, ContainerSpec] = {}
        self._on_log: LogSink = lambda t, fd, s: None
        self._on_exit: ExitSink = lambda t, rc: None

    def bind(self, on_log: LogSink, on_exit: ExitSink) -> None:
        self._on_log, self._on_exit = on_log, on_exit

    def warm_up(self) -> None:
        return None

    async def start(self, spec: ContainerSpec) -> int:
        self.started.append(spec)
        self._running[spec.task_id] = spec
        return len(self.started)

    async def stop(self, task_id: str, grace: float) -> None:
        if self._running.pop(task_id, None) is not None:
            self.stopped.append(task_id)
            self._on_exit(task_id, -15)

    def crash(self, task_id: str, returncode: int = -9) -> None:
        self._running.pop(task_id, None)
        self._on_exit(task_id, returncode)

    def emit(self, task_id: str, fd: int, text: str) -> None:
        self._on_log(task_id, fd, text)

    def running(self) -> list[str]:
        return list(self._running)

    async def shutdown(self) -> None:
        for task_id in list(self._running):
            await self.stop(task_id, 0)
