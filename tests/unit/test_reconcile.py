"""One reconcile step of the autoscaler over the real call and container services on the fake runtime."""

from __future__ import annotations

import asyncio

from onshore.background import Background
from onshore.loops.autoscaler import Autoscaler
from onshore.models import FunctionSpec, FunctionTarget
from onshore.runtimes.fake import FakeRuntime
from onshore.services.call_state import INVOCATION_SYNC, STATUS_SUCCESS, ContainerOutput
from onshore.services.calls import CallService
from onshore.services.clock import FakeClock
from onshore.services.containers import ContainerService, LaunchPlan
from onshore.services.logs import LogService
from onshore.store.memory import memory_store

FN, APP = "fu-reconcile", "ap-reconcile"


async def _plan(function_id: str, task_id: str) -> LaunchPlan:
    return LaunchPlan(container_args=b"", code_dir="/tmp", client_version="", env={})


class Harness:
    def __init__(self, spec: FunctionSpec) -> None:
        self.clock = FakeClock()
        self.runtime = FakeRuntime(max_containers=4)
        self.background = Background("unit")
        self.calls = CallService(memory_store(), {FN: spec}.get, lambda s, m: m.encode(), self.clock, 0.2)
        self.containers = ContainerService(
            self.runtime,
            self.calls,
            LogService(self.clock),
            _plan,
            lambda s, m: m.encode(),
            self.clock,
            "unix:///x",
            background=self.background,
        )
        self.targets = {FN: FunctionTarget(FN, APP, spec)}  # the functions that exist
        self.scaler = Autoscaler(
            self.calls,
            self.containers,
            self.targets.get,
            lambda: [FN] if spec.min_containers else [],  # functions that keep warm containers
            self.clock,
            background=self.background,
        )

    async def step(self) -> list[str]:
        """One reconcile, then the starts and stops it asked for; the containers the runtime now runs."""
        self.scaler.reconcile()
        for _ in range(5):
            await asyncio.sleep(0)
        return self.runtime.running()


async def test_queued_inputs_start_containers_and_idle_ones_go_after_their_window() -> None:
    h = Harness(FunctionSpec(tag="f", scaledown_window=60))
    call = h.calls.create_call(FN, APP, 1, INVOCATION_SYNC)
    h.calls.add_inputs(call, [(0, b"a"), (1, b"b"), (2, b"c")])
    running = await h.step()
    assert len(running) == 3  # one container per queued input (each takes one input at a time)
    assert [t.function_id for t in h.containers.for_function(FN)] == [FN] * 3

    # The containers take the inputs and finish them.
    for task_id in running:
        task = h.containers.tasks[task_id]
        h.containers.mark_running(task)
        (item,) = await h.calls.next_inputs(task_id, FN)
        h.calls.put_outputs(task_id, [ContainerOutput(item.input_id, STATUS_SUCCESS, b"ok", 1, 0.0, 0.0, 0)])
        h.containers.touch(task)
    assert call.unfinished == 0
    assert len(await h.step()) == 3  # idle, but inside their scaledown window
    h.clock.advance(61)
    assert await h.step() == []  # past it: scaled to zero
    assert sorted(h.runtime.stopped) == sorted(running)
    assert h.containers.for_function(FN) == []
    await h.background.close()


async def test_a_function_that_is_gone_has_its_containers_stopped() -> None:
    h = Harness(FunctionSpec(tag="f", min_containers=2))
    assert len(await h.step()) == 2  # min_containers: kept warm with no demand
    del h.targets[FN]  # its app was stopped, or redeployed without it
    assert await h.step() == []
    await h.background.close()
