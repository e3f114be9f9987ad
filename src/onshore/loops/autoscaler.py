"""The autoscaler: desired containers per function from observed demand, reconciled through the runtime."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from onshore.background import Background
from onshore.loops.base import Loop
from onshore.loops.hostcpu import ScaleOutGate, scale_up_allowance
from onshore.models import FunctionSpec, FunctionTarget
from onshore.scheduling.placement import Ledger, Request, request_of
from onshore.services.calls import CallService
from onshore.services.clock import Clock
from onshore.services.containers import ContainerService, Task, TaskState

log = logging.getLogger("onshore.autoscaler")


@dataclass(frozen=True)
class Sample:
    queued: int
    running_inputs: int
    containers: int
    idle_expired: int  # containers idle for longer than the scaledown window


def desired_containers(sample: Sample, spec: FunctionSpec) -> int:
    """How many containers a function should have. Pure: table-tested."""
    # @modal.concurrent(max_inputs=, target_inputs=): a container may take max_inputs at once, and the
    # autoscaler sizes the function for target_inputs each.
    # @modal.batched(max_batch_size=): a container takes a whole batch at once.
    per_container = max(1, spec.target_concurrent_inputs or spec.max_concurrent_inputs, spec.batch_max_size)
    needed = math.ceil((sample.queued + sample.running_inputs) / per_container)
    if needed > 0:
        needed += spec.buffer_containers
    # Containers still inside their scaledown window stay: scale to zero only after the window.
    keep_warm = sample.containers - sample.idle_expired
    desired = max(needed, keep_warm, spec.min_containers)
    if spec.max_containers > 0:
        desired = min(desired, spec.max_containers)
    return desired


TargetLookup = Callable[[str], "FunctionTarget | None"]


def _room_for(ledger: Ledger, slots: int, request: Request, count: int, freed: list[Task]) -> bool:
    """Would `count` containers asking for `request` fit, were the `freed` containers gone?"""
    trial = ledger.copy()
    for t in freed:
        if t.allocation is not None:
            trial.release(t.allocation)
    slots += len(freed)
    for _ in range(count):
        placed = trial.fit(request) if slots > 0 else None
        if placed is None:
            return False
        trial.reserve(placed)
        slots -= 1
    return True


class Autoscaler(Loop):
    name = "autoscaler"

    def __init__(
        self,
        calls: CallService,
        containers: ContainerService,
        targets: TargetLookup,
        warm_functions: Callable[[], list[str]],
        clock: Clock,
        tick: float = 1.0,
        gate: ScaleOutGate | None = None,
        cores: int = 1,
        background: Background | None = None,
    ) -> None:
        """gate: holds scale-out past `cores` containers per function while the host's CPUs are full (None:
        containers start as demand asks, e.g. when they do not run on this host's CPUs). background: where
        the container starts and stops it asks for run."""
        super().__init__(tick)
        self._calls = calls
        self._containers = containers
        self._targets = targets
        self._warm_functions = warm_functions
        self._clock = clock
        self._background = background or Background("autoscaler")
        self._dirty: set[str] = set()
        self._warned_full = False
        self._gate = gate
        self._cores = max(1, cores)

    def demand_changed(self, function_id: str) -> None:
        """A function's demand or containers changed: reconcile it at the next tick, which comes now."""
        self._dirty.add(function_id)
        self.wake()

    def sample(self, function_id: str, spec: FunctionSpec) -> Sample:
        queued, running = self._calls.demand(function_id)
        tasks = self._containers.for_function(function_id)
        now = self._clock.monotonic()
        idle_expired = sum(
            1
            for t in tasks
            if t.state == TaskState.RUNNING
            and self._calls.task_busy(t.task_id) == 0
            and now - t.last_active >= spec.scaledown_window
        )
        return Sample(queued, running, len(tasks), idle_expired)

    async def run_once(self) -> None:
        self.reconcile()

    def reconcile(self) -> None:
        """One pass: every function with demand, containers or warm-container settings is reconciled."""
        if self._gate is not None:
            self._gate.tick()
        candidates = set(self._dirty)
        self._dirty.clear()
        candidates.update(self._calls.functions_with_demand())
        candidates.update(t.function_id for t in self._containers.serving())
        candidates.update(self._warm_functions())
        for function_id in candidates:
            try:
                self._reconcile(function_id)
            except Exception:
                log.exception("autoscaler: reconciling %s failed", function_id)

    def _reconcile(self, function_id: str) -> None:
        target = self._targets(function_id)
        tasks = self._containers.for_function(function_id)
        if target is None:
            if self._gate is not None:
                self._gate.forget(function_id)
            for t in tasks:
                self._stop(t.task_id, "its function is gone")
            return
        sample = self.sample(function_id, target.spec)
        if self._gate is not None and not (sample.queued or sample.running_inputs):
            self._gate.reset(function_id)  # idle: the CPU it used tells nothing about its next burst
        self._stop_slow_starters(tasks, target.spec)
        desired = desired_containers(sample, target.spec)
        if desired > sample.containers:
            want = self._allowed(function_id, sample.containers, desired - sample.containers, target.spec)
            if want <= 0:
                return
            request = request_of(target.spec)
            started = 0
            while started < want:
                task = self._containers.try_reserve(function_id, target.app_id, request)
                if task is None:
                    break
                self._launch(task)
                started += 1
            if started < want and sample.queued:
                # No room: idle containers of other functions make way for queued work.
                self._make_room(function_id, request, want - started)
            if started and self._gate is not None:
                self._gate.reset(function_id)
        elif desired < sample.containers:
            now = self._clock.monotonic()
            idle = sorted(
                (
                    t
                    for t in tasks
                    if t.state == TaskState.RUNNING
                    and self._calls.task_busy(t.task_id) == 0
                    and now - t.last_active >= target.spec.scaledown_window
                ),
                key=lambda t: t.last_active,
            )
            for t in idle[: sample.containers - desired]:
                self._stop(t.task_id, "idle past its scaledown window")

    def _allowed(self, function_id: str, current: int, want: int, spec: FunctionSpec) -> int:
        headroom = self._gate.headroom(function_id) if self._gate is not None else None
        if headroom is None:
            return want
        return scale_up_allowance(current, want, self._cores, spec, headroom)

    def _stop_slow_starters(self, tasks: list[Task], spec: FunctionSpec) -> None:
        """A container still starting its function's startup timeout after it was started is stopped: a
        start failure (three in a row fail the function's queued inputs), and a new one is tried."""
        limit = spec.startup_timeout_secs or spec.timeout_secs
        now = self._clock.monotonic()
        for t in tasks:
            if t.state == TaskState.STARTING and t.launched_at and now - t.launched_at > limit:
                self._containers.start_timed_out(t, limit)

    def _make_room(self, needed_by: str, request: Request, count: int) -> None:
        """Stop the fewest idle containers of other functions (the longest idle first) that leave room for
        `count` containers of `needed_by`; none when that is not enough (its inputs wait), or when containers
        already stopping will leave that room."""
        ledger, slots = self._containers.ledger, self._containers.capacity_left()
        # What containers already stopping hold is as good as free: they end soon.
        stopping = [t for t in self._containers.serving() if t.state == TaskState.STOPPING]
        if _room_for(ledger, slots, request, count, stopping):
            return
        live: dict[str, int] = {}
        for t in self._containers.serving():
            if t.state != TaskState.STOPPING:
                live[t.function_id] = live.get(t.function_id, 0) + 1
        idle = sorted(
            (
                t
                for t in self._containers.serving()
                if t.function_id != needed_by
                and t.state == TaskState.RUNNING
                and self._calls.task_busy(t.task_id) == 0
            ),
            key=lambda t: t.last_active,
        )
        chosen: list[Task] = []
        for t in idle:
            if _room_for(ledger, slots, request, count, stopping + chosen):
                break
            if live[t.function_id] <= self._min_containers(t.function_id):
                continue  # its function's min_containers keeps it (counting those already chosen)
            live[t.function_id] -= 1
            chosen.append(t)
        if not _room_for(ledger, slots, request, 1, stopping + chosen):
            chosen = []  # not even one would fit: stop nothing, the input waits
        else:
            # The fewest of them that still make the room (all `count`, or as many as they can).
            room = count if _room_for(ledger, slots, request, count, stopping + chosen) else 1
            for t in reversed(list(chosen)):
                rest = [k for k in chosen if k is not t]
                if _room_for(ledger, slots, request, room, stopping + rest):
                    chosen = rest
        for t in chosen:
            t.requeue_inputs = True  # an input handed to it before its stop lands runs elsewhere
            self._stop(t.task_id, f"idle, and its place is needed by {needed_by}")
        if chosen:
            self._warned_full = False
        elif not self._warned_full:
            self._warned_full = True
            log.warning(
                "no room for a container of %s (%s): its inputs wait for one to end; %s",
                needed_by,
                request.describe(),
                self._containers.ledger.describe(),
            )

    def _min_containers(self, function_id: str) -> int:
        owner = self._targets(function_id)
        return owner.spec.min_containers if owner is not None else 0

    def _stop(self, task_id: str, reason: str) -> None:
        self._background.spawn(self._containers.stop(task_id, reason), f"stop {task_id}")

    def _launch(self, reserved: Task) -> None:
        async def go() -> None:
            try:
                await self._containers.launch(reserved)
            except Exception as exc:  # the container service has logged it
                log.debug("start failed: %s", exc)

        self._background.spawn(go(), f"start a container of {reserved.function_id}")
