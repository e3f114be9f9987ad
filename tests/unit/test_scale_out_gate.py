"""Scale-out past the core count waits for CPU headroom: the pure allowance, the gate, and the autoscaler."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from onshore.loops.autoscaler import Autoscaler
from onshore.loops.hostcpu import ScaleOutGate, read_cpu_times, scale_up_allowance
from onshore.models import FunctionSpec, FunctionTarget
from onshore.services.clock import FakeClock
from onshore.services.containers import TaskState


@pytest.mark.parametrize(
    ("current", "want", "cores", "min_containers", "headroom", "expected"),
    [
        pytest.param(0, 7, 2, 0, False, 4, id="up-to-twice-the-cores-at-once"),
        pytest.param(3, 7, 2, 0, False, 1, id="three-running-one-more"),
        pytest.param(4, 6, 2, 0, False, 0, id="at-twice-the-cores-cpus-full-wait"),
        pytest.param(4, 6, 2, 0, True, 4, id="at-twice-the-cores-headroom-doubles"),
        pytest.param(1, 6, 2, 0, True, 3, id="below-it-headroom-up-to-it"),
        pytest.param(4, 1, 2, 0, True, 1, id="never-more-than-wanted"),
        pytest.param(4, 10, 2, 0, True, 4, id="headroom-doubles"),
        pytest.param(0, 1, 8, 0, False, 1, id="small-demand-all-of-it"),
        pytest.param(0, 5, 2, 5, False, 5, id="min-containers-start-at-once"),
        pytest.param(0, 3, 1, 0, False, 2, id="one-core-two-at-once"),
    ],
)
def test_scale_up_allowance(
    current: int, want: int, cores: int, min_containers: int, headroom: bool, expected: int
) -> None:
    spec = FunctionSpec(tag="f", min_containers=min_containers)
    assert scale_up_allowance(current, want, cores, spec, headroom) == expected


class FakeCpu:
    """Cumulative (busy, total) CPU ticks: `run(seconds, busy_fraction)` advances them and the clock."""

    def __init__(self, clock: FakeClock, cores: int = 2) -> None:
        self.clock, self.cores = clock, cores
        self.busy, self.total = 0.0, 0.0
        self.readable = True

    def __call__(self) -> tuple[float, float] | None:
        return (self.busy, self.total) if self.readable else None

    def run(self, seconds: float, busy_fraction: float) -> None:
        self.total += seconds * 100 * self.cores
        self.busy += seconds * 100 * self.cores * busy_fraction
        self.clock.advance(seconds)


def test_headroom_needs_a_whole_window_after_the_last_scale_up() -> None:
    clock = FakeClock()
    cpu = FakeCpu(clock)
    gate = ScaleOutGate(cpu, clock, window=1.0)
    assert gate.headroom("fn") is False  # no window measured yet
    cpu.run(1.0, 0.1)
    gate.tick()
    assert gate.headroom("fn") is True
    gate.reset("fn")
    assert gate.headroom("fn") is False  # the last window predates the new containers
    cpu.run(0.5, 0.1)
    gate.tick()  # half a window: not closed yet
    assert gate.headroom("fn") is False
    cpu.run(0.6, 0.1)
    gate.tick()
    assert gate.headroom("fn") is True  # a whole window at the new size, with room
    cpu.run(0.3, 0.1)
    gate.reset("fn")  # a scale-up between two ticks
    cpu.run(0.8, 0.1)
    gate.tick()
    assert gate.headroom("fn") is False  # this window began before it
    cpu.run(1.0, 0.95)
    gate.tick()
    assert gate.headroom("fn") is False  # measured at its new size: the CPUs were full
    cpu.run(1.0, 0.5)
    gate.tick()
    assert gate.headroom("fn") is True


def test_no_cpu_readings_no_gate() -> None:
    clock = FakeClock()
    cpu = FakeCpu(clock)
    cpu.readable = False
    gate = ScaleOutGate(cpu, clock)
    cpu.run(2.0, 1.0)
    gate.tick()
    assert gate.headroom("fn") is None


def test_read_cpu_times_sums_busy_and_idle_columns(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal
    stat.write_text("cpu  100 5 50 800 20 3 2 10 0 0\ncpu0 50 2 25 400 10 1 1 5 0 0\n")
    assert read_cpu_times(str(stat)) == (170.0, 990.0)
    stat.write_text("intr 1 2 3\n")
    assert read_cpu_times(str(stat)) is None
    assert read_cpu_times(str(tmp_path / "missing")) is None


# ------------------------------------------------------------------ the autoscaler with the gate


@dataclass
class FakeTask:
    task_id: str
    function_id: str
    state: TaskState = TaskState.RUNNING
    last_active: float = 0.0


@dataclass
class FakeCalls:
    queued: int = 0

    def demand(self, function_id: str) -> tuple[int, int]:
        return self.queued, 0

    def functions_with_demand(self) -> list[str]:
        return ["fn"] if self.queued else []

    def task_busy(self, task_id: str) -> int:
        return 1


@dataclass
class FakeContainers:
    tasks: list[FakeTask] = field(default_factory=list)
    limit: int = 8

    def for_function(self, function_id: str) -> list[FakeTask]:
        return [t for t in self.tasks if t.function_id == function_id]

    def serving(self) -> list[FakeTask]:
        return list(self.tasks)

    def capacity_left(self) -> int:
        return self.limit - len(self.tasks)

    def try_reserve(self, function_id: str, app_id: str, request: object) -> FakeTask | None:
        if self.capacity_left() <= 0:
            return None
        task = FakeTask(f"ta-{len(self.tasks)}", function_id)
        self.tasks.append(task)
        return task

    async def launch(self, task: FakeTask) -> None:
        return None


def _autoscaler(
    calls: FakeCalls, containers: FakeContainers, clock: FakeClock, **gating: ScaleOutGate | int
) -> Autoscaler:
    """The autoscaler over fakes, serving the one function "fn"."""
    target = FunctionTarget("fn", "ap", FunctionSpec(tag="f"))
    return Autoscaler(
        calls,  # type: ignore[arg-type]
        containers,  # type: ignore[arg-type]
        lambda fid: target if fid == "fn" else None,
        lambda: [],
        clock,
        **gating,  # type: ignore[arg-type]
    )


async def test_a_cpu_bound_burst_stays_at_twice_the_core_count_and_an_io_bound_one_keeps_growing() -> None:
    clock = FakeClock()
    cpu = FakeCpu(clock, cores=2)
    calls, containers = FakeCalls(), FakeContainers(tasks=[FakeTask("ta-warm", "fn")], limit=16)
    scaler = _autoscaler(calls, containers, clock, gate=ScaleOutGate(cpu, clock), cores=2)

    def step(seconds: float, busy: float) -> int:
        cpu.run(seconds, busy)
        scaler.reconcile()
        return len(containers.tasks)

    calls.queued = 0
    assert step(1.0, 0.05) == 1  # a warm container, idle
    calls.queued = 100
    assert step(0.1, 0.05) == 4  # a burst: up to twice the core count at once
    assert step(1.2, 0.97) == 4  # CPU-bound: the CPUs are full at this size, so no more
    assert step(1.2, 0.97) == 4
    assert step(1.2, 0.40) == 8  # the work turned I/O-bound: room on the CPUs, it doubles
    assert step(0.3, 0.40) == 8  # not before a whole window shows the new size
    assert step(1.2, 0.40) == 16  # doubled again (the container limit is 16)
    calls.queued = 3
    assert step(1.2, 0.40) == 16  # no more than the demand asks for
    await asyncio.sleep(0)  # let the launch tasks finish


async def test_without_a_gate_the_burst_gets_every_container_it_asks_for() -> None:
    clock = FakeClock()
    calls, containers = FakeCalls(queued=100), FakeContainers(tasks=[FakeTask("ta-warm", "fn")])
    scaler = _autoscaler(calls, containers, clock)
    scaler.reconcile()
    assert len(containers.tasks) == 8
    await asyncio.sleep(0)
