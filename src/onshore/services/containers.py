"""Containers (tasks): start them through the runtime, give each its own credential, watch them end."""

from __future__ import annotations

import asyncio
import enum
import hmac
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from onshore import ids
from onshore.background import Background
from onshore.errors import Conflict, Unauthenticated
from onshore.events import Events
from onshore.models import ImageConfig, VolumeMountRef
from onshore.runtimes.base import FD_INFO, ContainerSpec, Runtime, VolumeBind
from onshore.runtimes.gpu_inventory import visible_devices
from onshore.scheduling.placement import Allocation, Ledger, Request
from onshore.services.call_state import STATUS_FAILURE
from onshore.services.calls import CallService
from onshore.services.clock import Clock
from onshore.services.logs import LogService

log = logging.getLogger("onshore.containers")

TASK_ID_HEADER = "x-onshore-task-id"
TASK_SECRET_HEADER = "x-onshore-task-secret"


class TaskState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class Task:
    task_id: str
    function_id: str
    app_id: str
    secret: str
    started_at: float
    state: TaskState = TaskState.STARTING
    pid: int = 0
    last_active: float = 0.0
    inputs_served: int = 0
    stop_reason: str = ""
    generation: int | None = None  # the function definition it runs (a redeploy makes it outdated)
    exit_code: int | None = None
    finished_at: float = 0.0
    draining: bool = False  # STOPPING after its current inputs (a graceful stop); a stop() still ends it
    requeue_inputs: bool = False  # inputs in flight when it ends run again elsewhere instead of failing
    image_build: object | None = None  # an Image.run_function container: see ContainerSpec.image_build
    allocation: Allocation | None = None  # the CPU, memory and GPUs reserved for it (None: not counted)
    launched_at: float = 0.0  # monotonic time the runtime started it (0: not yet)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def builds_image(self) -> bool:
        """An Image.run_function container: the image build that started it owns it."""
        return self.image_build is not None


@dataclass
class LaunchPlan:
    """What the container service needs from the rest of the system to start one container."""

    container_args: bytes
    code_dir: str
    client_version: str
    env: dict[str, str]
    image: ImageConfig | None = None
    memory_limit_mb: int = 0
    cpu_limit: float = 0.0
    volumes: list[VolumeMountRef] = field(default_factory=list)


class VolumeAttacher(Protocol):
    """Mounts a container's volumes on the host before it starts, and removes them when it ends."""

    async def attach(self, task_id: str, refs: list[VolumeMountRef]) -> list[VolumeBind]: ...
    async def detach(self, task_id: str) -> None: ...


MAX_START_FAILURES = 3

PlanBuilder = Callable[[str, str], Awaitable[LaunchPlan]]  # (function_id, task_id) -> plan


def describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"was killed by {name}"
    return f"exited with code {rc}"


class ContainerService:
    def __init__(
        self,
        runtime: Runtime,
        calls: CallService,
        logs: LogService,
        plan: PlanBuilder,
        failure: Callable[[int, str], bytes],
        clock: Clock,
        server_url: str,
        stop_grace: float = 5.0,
        background: Background | None = None,
        events: Events | None = None,
        volumes: VolumeAttacher | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self._runtime = runtime
        self.ledger = ledger or Ledger([])
        self._volumes = volumes
        self._background = background or Background("containers")
        self._calls = calls
        self._logs = logs
        self._plan = plan
        self._failure_result = failure
        self._clock = clock
        self._server_url = server_url
        self._stop_grace = stop_grace
        self.tasks: dict[str, Task] = {}
        self._start_failures: dict[str, int] = {}
        self.shutting_down = False
        self._events = events or Events()
        runtime.bind(self._on_log, self._on_exit)

    # ---------------------------------------------------------------- identity
    def authenticate(self, task_id: str, secret: str) -> Task:
        task = self.tasks.get(task_id)
        if task is None or not hmac.compare_digest(task.secret, secret):
            raise Unauthenticated(f"Unknown or stopped container credential for {task_id}")
        return task

    # ---------------------------------------------------------------- queries
    def serving(self) -> list[Task]:
        """The containers that serve their functions' inputs: not an Image.run_function container, which
        the image build that started it owns."""
        return [t for t in self.tasks.values() if not t.builds_image]

    def for_function(self, function_id: str) -> list[Task]:
        return [t for t in self.serving() if t.function_id == function_id and t.state != TaskState.STOPPING]

    def for_app(self, app_id: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.app_id == app_id]

    def capacity_left(self) -> int:
        live = sum(1 for t in self.tasks.values() if t.state != TaskState.STOPPED)
        return max(0, self._runtime.capabilities.max_containers - live)

    def reserve(self, function_id: str, app_id: str, allocation: Allocation | None = None) -> Task:
        """Register a container synchronously, so capacity and reconcile see it before it runs."""
        task = Task(ids.new_id("task"), function_id, app_id, ids.new_secret(), self._clock.now())
        task.last_active = self._clock.monotonic()
        if allocation is not None:
            self.ledger.reserve(allocation)
            task.allocation = allocation
        self.tasks[task.task_id] = task
        return task

    def try_reserve(self, function_id: str, app_id: str, request: Request) -> Task | None:
        """A container with what `request` asks reserved for it, or None while there is no room for it
        (the container count, or a node's CPU, memory or GPUs)."""
        if self.capacity_left() <= 0:
            return None
        allocation = self.ledger.fit(request)
        if allocation is None:
            return None
        return self.reserve(function_id, app_id, allocation)

    def _forget(self, task_id: str) -> Task | None:
        task = self.tasks.pop(task_id, None)
        if task is not None and task.allocation is not None:
            self.ledger.release(task.allocation)
            task.allocation = None
        return task

    async def launch(self, task: Task) -> None:
        task_id, function_id, app_id = task.task_id, task.function_id, task.app_id
        try:
            plan = await self._plan(function_id, task_id)
            env = dict(plan.env)
            env["MODAL_SERVER_URL"] = self._server_url
            env["MODAL_OVERRIDE_HEADERS"] = f"{TASK_ID_HEADER}:{task_id},{TASK_SECRET_HEADER}:{task.secret}"
            binds: list[VolumeBind] = []
            if plan.volumes:
                if self._volumes is None:
                    raise Conflict("This server cannot mount volumes into containers")
                binds = await self._volumes.attach(task_id, plan.volumes)
            gpus = list(task.allocation.gpus) if task.allocation is not None else []
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = visible_devices(gpus)
                note = task.allocation.substituted if task.allocation is not None else ""
                if note:
                    self._logs.append(app_id, task_id, function_id, FD_INFO, note + "\n")
                    log.info("container %s %s", task_id, note)
            spec = ContainerSpec(
                task_id=task_id,
                app_id=app_id,
                function_id=function_id,
                container_args=plan.container_args,
                code_dir=plan.code_dir,
                client_version=plan.client_version,
                env=env,
                image=plan.image,
                memory_limit_mb=plan.memory_limit_mb,
                cpu_limit=plan.cpu_limit,
                image_build=task.image_build,
                volumes=binds,
                gpus=gpus,
            )
            task.pid = await self._runtime.start(spec)
            task.launched_at = self._clock.monotonic()
        except Exception as exc:
            self._forget(task_id)
            if self._volumes is not None:
                await self._volumes.detach(task_id)
            message = f"Container for {function_id} could not start: {exc}"
            log.warning(message)
            self._logs.append(app_id, task_id, function_id, FD_INFO, message + "\n")
            self._record_start_failure(function_id, message)
            raise
        log.info("started container %s (pid %s) for %s", task_id, task.pid, function_id)

    def mark_running(self, task: Task) -> None:
        if task.state == TaskState.STARTING:
            task.state = TaskState.RUNNING
            task.ready.set()
            self._start_failures.pop(task.function_id, None)

    def start_timed_out(self, task: Task, limit: float) -> None:
        """A container not serving `limit` seconds after it started: stopped, and counted as a failed start
        (as many in a row fail the function's queued inputs, instead of replacing containers for ever)."""
        reason = f"it did not start serving within its startup timeout of {limit:g}s"
        if task.stop_reason:
            return  # already being stopped (this counts once)
        task.stop_reason = reason
        self._background.spawn(self.stop(task.task_id, reason), f"stop {task.task_id}")
        self._record_start_failure(
            task.function_id, f"Containers for this function did not start within {limit:g}s"
        )

    def init_failed(self, task: Task, result: bytes) -> None:
        """The container reported that importing the code or running @enter failed (TaskResult)."""
        task.stop_reason = "its initialization failed"
        failed = self._calls.fail_queued(task.function_id, STATUS_FAILURE, result)
        log.info("container %s failed to initialize; failed %d queued inputs", task.task_id, failed)

    def touch(self, task: Task) -> None:
        task.last_active = self._clock.monotonic()

    async def stop(self, task_id: str, reason: str, grace: float | None = None) -> None:
        task = self.tasks.get(task_id)
        if (
            task is None
            or task.state == TaskState.STOPPED
            or (task.state == TaskState.STOPPING and not task.draining)
        ):
            return
        task.draining = False
        started = task.ready.is_set()
        task.state = TaskState.STOPPING
        task.stop_reason = reason
        log.info("stopping container %s: %s", task_id, reason)
        if grace is None:
            # A container still importing its code has no @exit hooks to run: end it at once.
            grace = self._stop_grace if started else 0.0
        await self._runtime.stop(task_id, grace)

    def kill(self, task_id: str, reason: str) -> None:
        """Stop a container at once (no grace), from synchronous code."""
        task = self.tasks.get(task_id)
        if task is not None and task.state != TaskState.STOPPED:
            task.stop_reason = reason
        self._background.spawn(self.stop(task_id, reason, grace=0), f"kill {task_id}")

    async def stop_app(self, app_id: str, reason: str) -> None:
        await asyncio.gather(
            *(self.stop(t.task_id, reason) for t in self.for_app(app_id)), return_exceptions=True
        )

    async def stop_function(self, function_id: str, reason: str) -> None:
        targets = [t.task_id for t in self.tasks.values() if t.function_id == function_id]
        await asyncio.gather(*(self.stop(t, reason) for t in targets), return_exceptions=True)

    def _record_start_failure(self, function_id: str, what: str) -> None:
        count = self._start_failures.get(function_id, 0) + 1
        self._start_failures[function_id] = count
        if count >= MAX_START_FAILURES:
            self._start_failures.pop(function_id, None)
            text = f"{what} ({count} attempts in a row); see the app logs for details"
            self._calls.fail_queued(function_id, STATUS_FAILURE, self._failure(text))

    def _failure(self, message: str) -> bytes:
        return self._failure_result(STATUS_FAILURE, message)

    # ---------------------------------------------------------------- runtime callbacks
    def _on_log(self, task_id: str, fd: int, text: str) -> None:
        task = self.tasks.get(task_id)
        if task is not None:
            self._logs.append(task.app_id, task_id, task.function_id, fd, text)

    def _on_exit(self, task_id: str, rc: int, detail: str = "") -> None:
        task = self._forget(task_id)
        if task is None:
            return
        expected = task.state == TaskState.STOPPING
        reached_inputs = task.ready.is_set()
        task.state = TaskState.STOPPED
        task.exit_code = rc
        task.finished_at = self._clock.now()
        task.ready.set()
        self._events.container_exited.emit(task)
        how = detail or describe_exit(rc)
        if self.shutting_down:
            log.info("container %s %s during shutdown", task_id, how)
            return
        reason = f" ({task.stop_reason})" if task.stop_reason else ""
        if task.requeue_inputs:
            self._calls.requeue_task_inputs(task_id)
        message = f"Container {task_id} {how} while running this input{reason}"
        failed = self._calls.fail_task_inputs(task_id, STATUS_FAILURE, message)
        if failed or (not expected and rc != 0):
            log.warning("container %s %s (%d inputs in flight)", task_id, how, failed)
            self._logs.append(
                task.app_id, task_id, task.function_id, FD_INFO, f"Container {task_id} {how}{reason}\n"
            )
        else:
            log.info("container %s %s", task_id, how)
        if not expected and not reached_inputs:
            self._record_start_failure(
                task.function_id, f"Containers for this function {how} before they could run any input"
            )
        # The function may still have work queued: let the autoscaler see the change.
        self._events.demand_changed.emit(task.function_id)
