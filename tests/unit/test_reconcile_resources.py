"""The reconciler against a node's resources (fake runtime and clock): waits, GPU hand-overs, timeouts."""

from __future__ import annotations

import asyncio

from onshore.background import Background
from onshore.loops.autoscaler import Autoscaler
from onshore.models import FunctionSpec, FunctionTarget, GpuChoice, GpuRequest
from onshore.runtimes.base import Resources
from onshore.runtimes.fake import FakeRuntime
from onshore.runtimes.gpu_inventory import emulated_gpus
from onshore.scheduling.placement import Ledger
from onshore.services.call_state import INVOCATION_SYNC, STATUS_SUCCESS, ContainerOutput
from onshore.services.calls import CallService
from onshore.services.clock import FakeClock
from onshore.services.containers import ContainerService, LaunchPlan
from onshore.services.logs import LogService
from onshore.store.memory import memory_store

APP = "ap-resources"


async def _plan(function_id: str, task_id: str) -> LaunchPlan:
    return LaunchPlan(container_args=b"", code_dir="/tmp", client_version="", env={})


class Harness:
    def __init__(self, specs: dict[str, FunctionSpec], node: Resources, max_containers: int = 8) -> None:
        self.clock = FakeClock()
        self.runtime = FakeRuntime(max_containers=max_containers)
        self.background = Background("unit")
        self.specs = specs
        self.calls = CallService(memory_store(), specs.get, lambda s, m: m.encode(), self.clock, 0.2)
        self.containers = ContainerService(
            self.runtime,
            self.calls,
            LogService(self.clock),
            _plan,
            lambda s, m: m.encode(),
            self.clock,
            "unix:///x",
            background=self.background,
            ledger=Ledger([node]),
        )
        self.targets = {fid: FunctionTarget(fid, APP, spec) for fid, spec in specs.items()}
        self.scaler = Autoscaler(
            self.calls, self.containers, self.targets.get, lambda: [], self.clock, background=self.background
        )

    async def step(self) -> list[str]:
        self.scaler.reconcile()
        for _ in range(5):
            await asyncio.sleep(0)
        return self.runtime.running()

    def queue(self, function_id: str, count: int) -> None:
        call = self.calls.create_call(function_id, APP, 1, INVOCATION_SYNC)
        self.calls.add_inputs(call, [(i, b"x") for i in range(count)])

    async def serve_one(self, task_id: str) -> None:
        """The container takes one input and finishes it."""
        task = self.containers.tasks[task_id]
        self.containers.mark_running(task)
        (item,) = await self.calls.next_inputs(task_id, task.function_id)
        done = ContainerOutput(item.input_id, STATUS_SUCCESS, b"ok", 1, 0.0, 0.0, 0)
        self.calls.put_outputs(task_id, [done])
        self.containers.touch(task)

    def of(self, function_id: str) -> list[str]:
        return [t.task_id for t in self.containers.for_function(function_id)]


def _gpu(kind: str) -> GpuRequest:
    return GpuRequest([GpuChoice(kind)])


async def test_inputs_wait_while_the_cpus_are_reserved_and_start_when_they_free() -> None:
    h = Harness({"fu-a": FunctionSpec(tag="a", cpu=1.0, scaledown_window=0)}, Resources(2, 8192))
    h.queue("fu-a", 3)
    running = await h.step()
    assert len(running) == 2  # 2 CPUs, 1 each: the third input waits, it does not fail
    assert h.calls.demand("fu-a")[0] == 3
    await h.serve_one(running[0])
    await h.step()  # idle past its window (0 s): stopped, and its CPU freed
    running = await h.step()
    assert len(h.of("fu-a")) == 2 and running[0] not in h.runtime.stopped
    assert h.containers.ledger.nodes[0].cpu == 2.0
    await h.background.close()


async def test_an_idle_gpu_container_gives_its_gpu_to_another_functions_waiting_input() -> None:
    node = Resources(8, 8192, emulated_gpus("T4:1"))
    specs = {
        "fu-warm": FunctionSpec(tag="warm", gpu=_gpu("T4"), scaledown_window=600),
        "fu-next": FunctionSpec(tag="next", gpu=_gpu("T4"), scaledown_window=600),
    }
    h = Harness(specs, node)
    h.queue("fu-warm", 1)
    (warm,) = await h.step()
    await h.serve_one(warm)  # now idle, for ten minutes more
    h.queue("fu-next", 1)
    await h.step()  # no GPU free: the idle container is stopped for it
    assert warm in h.runtime.stopped
    await h.step()
    (started,) = h.of("fu-next")
    spec = h.runtime.started[-1]
    assert spec.function_id == "fu-next" and spec.env["CUDA_VISIBLE_DEVICES"] == "0"
    assert [g.model for g in spec.gpus] == ["T4"]
    assert started in h.runtime.running()
    await h.background.close()


async def test_a_busy_gpu_container_is_not_stopped_and_cpu_only_containers_are_spared() -> None:
    node = Resources(8, 8192, emulated_gpus("T4:1"))
    specs = {
        "fu-busy": FunctionSpec(tag="busy", gpu=_gpu("T4")),
        "fu-cpu": FunctionSpec(tag="cpu", scaledown_window=600),
        "fu-next": FunctionSpec(tag="next", gpu=_gpu("T4")),
    }
    h = Harness(specs, node)
    h.queue("fu-cpu", 1)
    (cpu,) = await h.step()
    await h.serve_one(cpu)  # idle, but it holds no GPU: stopping it would not help
    h.queue("fu-busy", 1)
    await h.step()
    (busy,) = h.of("fu-busy")
    h.containers.mark_running(h.containers.tasks[busy])
    await h.calls.next_inputs(busy, "fu-busy")  # it runs its input
    h.queue("fu-next", 1)
    await h.step()
    assert h.runtime.stopped == []  # neither the busy GPU container nor the useless idle one
    assert h.of("fu-next") == []  # its input waits
    await h.background.close()


async def test_a_container_that_does_not_start_within_its_startup_timeout_is_replaced() -> None:
    h = Harness({"fu-slow": FunctionSpec(tag="slow", startup_timeout_secs=30)}, Resources(2, 8192))
    h.queue("fu-slow", 1)
    (first,) = await h.step()
    h.clock.advance(10)
    await h.step()
    assert h.runtime.stopped == []  # still inside its startup timeout
    h.clock.advance(25)
    await h.step()
    assert h.runtime.stopped == [first]
    replacement = await h.step()
    assert len(replacement) == 1 and replacement[0] != first  # its input still waits: a new container
    # Three starts in a row that time out: the input fails instead of waiting for ever.
    for _ in range(2):
        h.clock.advance(31)
        await h.step()
        await h.step()
    assert len(h.runtime.stopped) == 3
    assert h.calls.demand("fu-slow") == (0, 0)
    await h.background.close()


async def test_containers_already_stopping_for_room_are_counted_and_no_more_are_stopped() -> None:
    node = Resources(8, 8192, emulated_gpus("T4:2"))
    specs = {
        "fu-a": FunctionSpec(tag="a", gpu=_gpu("T4"), scaledown_window=600),
        "fu-c": FunctionSpec(tag="c", gpu=_gpu("T4"), scaledown_window=600),
        "fu-b": FunctionSpec(tag="b", gpu=_gpu("T4"), scaledown_window=600),
    }
    h = Harness(specs, node)
    h.runtime.slow_stops = True  # a stopped container takes a while to end (its @exit hooks)
    for fid in ("fu-a", "fu-c"):
        h.queue(fid, 1)
        await h.step()
        (task,) = h.of(fid)
        await h.serve_one(task)  # both idle, each holding one of the two T4s
    h.queue("fu-b", 1)
    for _ in range(4):  # several ticks pass before the first one stopped has ended
        await h.step()
    assert len(h.runtime.stopped) == 1  # one GPU is needed: one container makes way, not both
    h.runtime.finish_stop(h.runtime.stopped[0])
    await h.step()
    assert len(h.of("fu-b")) == 1 and len(h.runtime.stopped) == 1
    await h.background.close()


async def test_make_room_never_takes_a_function_below_its_min_containers() -> None:
    node = Resources(8, 8192, emulated_gpus("T4:2"))
    specs = {
        "fu-warm": FunctionSpec(tag="warm", gpu=_gpu("T4"), min_containers=1, scaledown_window=600),
        "fu-next": FunctionSpec(tag="next", gpu=_gpu("T4")),
        "fu-big": FunctionSpec(tag="big", gpu=GpuRequest([GpuChoice("T4", 2)])),
    }
    h = Harness(specs, node)
    h.queue("fu-warm", 2)
    for task in await h.step():
        await h.serve_one(task)  # two idle containers holding both T4s, one above the minimum
    h.queue("fu-next", 2)  # two inputs that each want a T4
    await h.step()
    await h.step()
    assert len(h.runtime.stopped) == 1  # one may go; the minimum's one stays
    assert len(h.of("fu-warm")) == 1 and len(h.of("fu-next")) == 1
    h.queue("fu-big", 1)  # two T4s at once: only the minimum's container could free the second
    await h.step()
    assert len(h.runtime.stopped) == 1 and h.of("fu-big") == []  # nothing useless is stopped; it waits
    await h.background.close()


async def test_a_start_timeout_counts_once_per_container() -> None:
    h = Harness({"fu-slow": FunctionSpec(tag="slow", startup_timeout_secs=30)}, Resources(2, 8192))
    h.runtime.slow_stops = True
    h.queue("fu-slow", 1)
    (first,) = await h.step()
    task = h.containers.tasks[first]
    for _ in range(3):  # seen by three ticks before its stop lands: one failed start, not three
        h.containers.start_timed_out(task, 30)
    await h.step()
    assert h.calls.demand("fu-slow")[0] == 1  # its input still waits for the next container
    await h.background.close()
