"""The container service over the fake runtime: what a start asks of the runtime, credentials, and what an
exit or a kill does to the inputs in flight, told through the event hub."""

from __future__ import annotations

import pytest

from onshore.background import Background
from onshore.errors import Unauthenticated
from onshore.events import Events
from onshore.models import FunctionSpec
from onshore.protocol.results import generic_result, make_result
from onshore.runtimes.fake import FakeRuntime
from onshore.services.call_state import INVOCATION_SYNC, STATUS_FAILURE
from onshore.services.calls import CallService
from onshore.services.clock import FakeClock
from onshore.services.containers import ContainerService, LaunchPlan, Task, TaskState
from onshore.services.logs import LogService
from onshore.store.memory import memory_store

FN, APP = "fu-" + "a" * 22, "ap-" + "a" * 22


class Harness:
    def __init__(self, max_containers: int = 2) -> None:
        self.clock = FakeClock()
        self.events = Events()
        self.runtime = FakeRuntime(max_containers=max_containers)
        self.background = Background("unit")
        self.logs = LogService(self.clock)
        self.calls = CallService(
            memory_store(), {FN: FunctionSpec(tag="f")}.get, make_result, self.clock, 0.2, events=self.events
        )
        self.plans: list[tuple[str, str]] = []
        self.containers = ContainerService(
            self.runtime,
            self.calls,
            self.logs,
            self._plan,
            make_result,
            self.clock,
            "unix:///srv/api.sock",
            background=self.background,
            events=self.events,
        )
        self.exited: list[Task] = []
        self.demand: list[str] = []
        self.events.container_exited.connect(self.exited.append)
        self.events.demand_changed.connect(self.demand.append)
        self.events.kill_task.connect(self.containers.kill)
        self.fail_plans = False

    async def _plan(self, function_id: str, task_id: str) -> LaunchPlan:
        if self.fail_plans:
            raise RuntimeError("its image is gone")
        self.plans.append((function_id, task_id))
        return LaunchPlan(
            container_args=b"args",
            code_dir="/code",
            client_version="1.0",
            env={"SECRET": "s"},
            memory_limit_mb=64,
        )


async def test_a_start_gives_the_runtime_the_plan_and_a_credential_only_that_container_holds() -> None:
    h = Harness()
    task = h.containers.reserve(FN, APP)
    assert h.containers.capacity_left() == 1  # reserved: counted before it runs
    await h.containers.launch(task)
    (spec,) = h.runtime.started
    assert (spec.task_id, spec.function_id, spec.container_args, spec.memory_limit_mb) == (
        task.task_id,
        FN,
        b"args",
        64,
    )
    assert spec.env["SECRET"] == "s" and spec.env["MODAL_SERVER_URL"] == "unix:///srv/api.sock"
    assert task.secret in spec.env["MODAL_OVERRIDE_HEADERS"] and spec.image_build is None
    assert h.containers.authenticate(task.task_id, task.secret) is task
    with pytest.raises(Unauthenticated):
        h.containers.authenticate(task.task_id, "not-its-secret")


async def test_a_start_that_fails_frees_its_place_and_says_why_in_the_app_logs() -> None:
    h = Harness()
    h.fail_plans = True
    task = h.containers.reserve(FN, APP)
    with pytest.raises(RuntimeError):
        await h.containers.launch(task)
    assert h.containers.capacity_left() == 2 and h.runtime.started == []
    lines = [e.data for e in h.logs.fetch(APP, 0, float("inf"), 100)]
    assert any("could not start: its image is gone" in line for line in lines)


async def test_a_crash_fails_its_inputs_in_flight_and_tells_the_hub() -> None:
    h = Harness()
    call = h.calls.create_call(FN, APP, 1, INVOCATION_SYNC)
    h.calls.add_inputs(call, [(0, b"in-0")])
    task = h.containers.reserve(FN, APP)
    await h.containers.launch(task)
    h.containers.mark_running(task)
    (item,) = await h.calls.next_inputs(task.task_id, FN, 1)
    h.demand.clear()
    h.runtime.crash(task.task_id, -9)
    assert h.exited == [task] and task.state == TaskState.STOPPED and task.exit_code == -9
    assert h.demand == [FN]  # the autoscaler looks again
    (output,) = call.outputs
    assert output.status == STATUS_FAILURE and item.done
    assert "was killed by SIGKILL" in generic_result(output.result).exception


async def test_a_kill_from_the_hub_stops_the_container_at_once() -> None:
    h = Harness()
    task = h.containers.reserve(FN, APP)
    await h.containers.launch(task)
    h.events.kill_task.emit(task.task_id, "its input ran past its timeout")
    await h.background.close(cancel=False)
    assert h.runtime.stopped == [task.task_id] and h.exited == [task]
    assert task.stop_reason == "its input ran past its timeout"
