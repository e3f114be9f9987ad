"""Containers as users see them: live and recently ended ones by id, user stops (graceful or not), logs."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from onshore.background import Background
from onshore.errors import NotFound
from onshore.services.calls import CallService
from onshore.services.clock import Clock
from onshore.services.containers import ContainerService, Task, TaskState
from onshore.services.logs import LogEntry, LogService

log = logging.getLogger("onshore.tasks")

# How many ended containers are remembered (for `modal container logs` and `stop` of a container that ended).
MAX_ENDED = 10_000
# How often a graceful stop checks whether the container's inputs are done.
DRAIN_POLL_SECONDS = 0.2
# A stream following one container's logs re-checks whether the container ended this often.
FOLLOW_SLICE_SECONDS = 0.5


@dataclass
class TaskRecord:
    """What is known of a container, live or ended."""

    task_id: str
    app_id: str
    function_id: str
    enqueued_at: float
    started_at: float
    finished_at: float = 0.0
    exit_code: int | None = None

    @property
    def live(self) -> bool:
        return not self.finished_at


def _record(task: Task) -> TaskRecord:
    return TaskRecord(
        task.task_id,
        task.app_id,
        task.function_id,
        enqueued_at=task.started_at,
        started_at=task.started_at,
        finished_at=task.finished_at,
        exit_code=task.exit_code,
    )


class TaskDirectory:
    """Finds containers by id, stops them on a user's request, and follows one container's logs."""

    def __init__(
        self,
        containers: ContainerService,
        calls: CallService,
        logs: LogService,
        clock: Clock,
        background: Background | None = None,
    ) -> None:
        self._containers = containers
        self._calls = calls
        self._logs = logs
        self._clock = clock
        self._ended: collections.OrderedDict[str, TaskRecord] = collections.OrderedDict()
        self._background = background or Background("tasks")

    # ---------------------------------------------------------------- lookups
    def record_exit(self, task: Task) -> None:
        """Remember a container that ended (wired to ContainerService.on_exit)."""
        self._ended[task.task_id] = _record(task)
        while len(self._ended) > MAX_ENDED:
            self._ended.popitem(last=False)

    def live(self, app_id: str = "") -> list[Task]:
        """The containers running now (including those stopping), optionally of one app."""
        tasks = self._containers.tasks.values()
        return [t for t in tasks if t.state != TaskState.STOPPED and (not app_id or t.app_id == app_id)]

    def ended(self, app_id: str, limit: int = 50) -> list[TaskRecord]:
        """The app's containers that ended most recently, newest first."""
        found = [r for r in reversed(self._ended.values()) if r.app_id == app_id]
        return found[:limit]

    def find(self, task_id: str) -> TaskRecord:
        task = self._containers.tasks.get(task_id)
        if task is not None:
            return _record(task)
        ended = self._ended.get(task_id)
        if ended is None:
            raise NotFound(f"Container {task_id or '(no id)'} not found")
        return ended

    def live_task(self, task_id: str) -> Task:
        task = self._containers.tasks.get(task_id)
        if task is None or task.state == TaskState.STOPPED:
            ended = task_id in self._ended
            raise NotFound(f"Container {task_id or '(no id)'} " + ("has stopped" if ended else "not found"))
        return task

    # ---------------------------------------------------------------- stops
    async def stop(self, task_id: str, graceful: bool) -> None:
        """Stop a container for a user.

        Not graceful: it gets SIGINT (its @exit hooks run) and the inputs it was running are cancelled and
        run again on other containers. Graceful: it takes no new inputs and ends once its current ones are
        done (at once when it has none).
        """
        task = self.live_task(task_id)
        if not graceful:
            task.requeue_inputs = True
            await self._containers.stop(task_id, "stopped by request")
            return
        if task.state == TaskState.STOPPING:
            return  # already stopping (or draining): a graceful stop asks for nothing more
        if not self._calls.task_busy(task_id):
            await self._containers.stop(task_id, "stopped by request (graceful)")
            return
        task.state = TaskState.STOPPING  # it takes no new inputs; the autoscaler replaces it
        task.draining = True
        task.stop_reason = "stopped by request (graceful): finishing its current inputs"
        log.info("container %s drains: it ends once its current inputs are done", task_id)
        self._background.spawn(self._drain(task), f"drain {task_id}")

    async def _drain(self, task: Task) -> None:
        while task.draining and task.state != TaskState.STOPPED and self._calls.task_busy(task.task_id):
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        if task.draining and task.state != TaskState.STOPPED:
            await self._containers.stop(task.task_id, "stopped by request (graceful): its inputs are done")

    # ---------------------------------------------------------------- logs
    async def follow_logs(
        self, task_id: str, last_entry_id: int, timeout: float, fd: int = 0
    ) -> AsyncIterator[list[LogEntry] | None]:
        """Like LogService.follow for one container: yields None once it has ended and its logs are read.

        Ends without None when the timeout passes (the client reconnects with its last entry id).
        """
        app_id = self.find(task_id).app_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ended = not self.find(task_id).live
            window = 0.0 if ended else max(0.0, min(FOLLOW_SLICE_SECONDS, deadline - loop.time()))
            released = False
            async for entries in self._logs.follow(app_id, last_entry_id, window, task_id=task_id):
                if entries is None:  # the app's log is done, or its followers were released
                    released = True
                    break
                last_entry_id = entries[-1].entry_id
                wanted = [e for e in entries if not fd or e.fd == fd]
                if wanted:
                    yield wanted
            if ended:
                yield None
                return
            if loop.time() >= deadline:
                return
            if released:  # the container still runs: keep following it
                await asyncio.sleep(min(FOLLOW_SLICE_SECONDS, max(0.0, deadline - loop.time())))
