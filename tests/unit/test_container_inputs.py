"""What a container gets when it asks for inputs: a batch (the last one marked), or the signal to stop."""

from __future__ import annotations

import pytest

from onshore.errors import PermissionDenied
from onshore.models import AppState, FunctionSpec
from onshore.runtimes.fake import FakeRuntime
from onshore.services.apps import AppService
from onshore.services.call_state import INVOCATION_SYNC
from onshore.services.calls import CallService
from onshore.services.clock import FakeClock
from onshore.services.container_inputs import ContainerInputs
from onshore.services.containers import ContainerService, LaunchPlan
from onshore.services.functions import FunctionService
from onshore.services.logs import LogService
from onshore.store.memory import memory_store


async def _plan(function_id: str, task_id: str) -> LaunchPlan:
    return LaunchPlan(container_args=b"", code_dir="/tmp", client_version="", env={})


async def test_batches_mark_the_last_allowed_input_and_a_stopped_app_sends_the_stop_signal() -> None:
    clock = FakeClock()
    store = memory_store()
    apps = AppService(store, clock)
    functions = FunctionService(store, apps, clock)
    calls = CallService(store, functions.spec, lambda s, m: m.encode(), clock, 0.2)
    containers = ContainerService(
        FakeRuntime(), calls, LogService(clock), _plan, lambda s, m: m.encode(), clock, "unix:///x"
    )
    inputs = ContainerInputs(functions, calls, containers)
    app = apps.create("batches", AppState.EPHEMERAL, "main")
    fn = functions.create(app.app_id, "", b"definition", FunctionSpec(tag="f", max_inputs=3), [])
    call = calls.create_call(fn.function_id, app.app_id, 1, INVOCATION_SYNC)
    calls.add_inputs(call, [(i, b"x") for i in range(5)])
    task = containers.reserve(fn.function_id, app.app_id)

    with pytest.raises(PermissionDenied, match="This container runs"):
        await inputs.next_batch(task, "fu-" + "o" * 22, 1, 0)
    first = await inputs.next_batch(task, fn.function_id, 2, 0)
    assert [(i.idx, final) for i, final in first.items] == [(0, False), (1, False)] and not first.stop
    second = await inputs.next_batch(task, fn.function_id, 1, 0)
    assert [(i.idx, final) for i, final in second.items] == [(2, True)]  # its third input: max_inputs=3

    await apps.stop(app.app_id, "done")
    assert (await inputs.next_batch(task, fn.function_id, 1, 0)).stop
