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
from onshore.services.calls import CallService
from onshore.services.clock import Clock
from onshore.services.containers import ContainerService, TaskState

log = logging.getLogger("onshore.autoscaler")


@dataclass(frozen=True)
class Sample:
    queued: int
    running_inputs: int
    containers: int
    idle_expired: int  # containers idle for longer than the scaledown window


def desired_containers(sample: Sample, spec: FunctionSpec) -> int:
    """How many containers a function should have. Pure: table-tested."""
    per_container = max(1, spec.max_concurrent_inputs)
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
        desired = desired_containers(sample, target.spec)
        if desired > sample.containers:
            want = self._allowed(function_id, sample.containers, desired - sample.containers, target.spec)
            if want <= 0:
                return
            room = self._containers.capacity_left()
            if room < want and sample.queued:
                # The machine is full: idle containers of other functions make way for queued work.
                self._evict_idle(function_id, want - room)
            for _ in range(min(want, room)):
                self._spawn(target)
            if room > 0 and self._gate is not None:
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

    def _evict_idle(self, needed_by: str, count: int) -> None:
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
        evicted = 0
        for t in idle:
            if evicted >= count:
                break
            owner = self._targets(t.function_id)
            if (
                owner is not None
                and len(self._containers.for_function(t.function_id)) <= owner.spec.min_containers
            ):
                continue
            evicted += 1
            self._stop(t.task_id, f"idle, and its slot is needed by {needed_by}")
        if evicted < count and not self._warned_full:
            self._warned_full = True
            log.warning(
                "all %d container slots are busy; queued inputs wait for a free one (see --max-containers)",
                self._containers.capacity_total(),
            )

    def _stop(self, task_id: str, reason: str) -> None:
        self._background.spawn(self._containers.stop(task_id, reason), f"stop {task_id}")

    def _spawn(self, target: FunctionTarget) -> None:
        reserved = self._containers.reserve(target.function_id, target.app_id)

        async def go() -> None:
            try:
                await self._containers.launch(reserved)
            except Exception as exc:  # the container service has logged it
                log.debug("start failed: %s", exc)

        self._background.spawn(go(), f"start a container of {target.function_id}")
