"""The invoke path: a call of a live function with its first inputs, and the wait for its output."""

from __future__ import annotations

import asyncio

import pytest

from onshore.errors import Conflict, InvalidArgument
from onshore.models import AppState, FunctionSpec
from onshore.services.apps import AppService
from onshore.services.call_state import INVOCATION_SYNC, STATUS_SUCCESS, ContainerOutput
from onshore.services.calls import CallService
from onshore.services.clock import FakeClock
from onshore.services.functions import FunctionService
from onshore.services.invoke import InvokeService
from onshore.store.memory import memory_store


class Harness:
    def __init__(self) -> None:
        clock = FakeClock()
        store = memory_store()
        self.apps = AppService(store, clock)
        self.functions = FunctionService(store, self.apps, clock)
        self.calls = CallService(store, self.functions.spec, lambda s, m: m.encode(), clock, 0.2)
        self.invoke = InvokeService(self.apps, self.functions, self.calls)
        self.app = self.apps.create("invoked", AppState.EPHEMERAL, "main")
        self.fn = self.functions.create(self.app.app_id, "", b"definition", FunctionSpec(tag="f"), [])


async def test_a_call_starts_with_its_inputs_queued_and_its_output_is_awaited() -> None:
    h = Harness()
    h.invoke.check_runnable(h.fn)
    call, items = h.invoke.start(h.fn, 1, INVOCATION_SYNC, [(0, b"in-0")])
    assert [i.idx for i in items] == [0] and h.calls.demand(h.fn.function_id) == (1, 0)
    assert await h.invoke.first_output(call, 0.05) is None  # nothing ran it yet

    async def container() -> None:
        (item,) = await h.calls.next_inputs("ta-1", h.fn.function_id)
        await asyncio.sleep(0.05)
        h.calls.put_outputs("ta-1", [ContainerOutput(item.input_id, STATUS_SUCCESS, b"out", 1, 0.0, 0.0, 0)])

    runner = asyncio.create_task(container())
    output = await h.invoke.first_output(call, 5.0)
    await runner
    assert output is not None and output.result == b"out"
    with pytest.raises(InvalidArgument, match="Too many inputs"):
        h.invoke.add(call, [(i, b"x") for i in range(10_001)])


async def test_a_function_of_a_stopped_app_is_not_called_and_a_failing_check_ends_the_wait() -> None:
    h = Harness()
    call, _ = h.invoke.start(h.fn, 1, INVOCATION_SYNC, [(0, b"in-0")])

    def gone() -> None:
        raise RuntimeError("its container died")

    with pytest.raises(RuntimeError, match="its container died"):
        await h.invoke.first_output(call, 5.0, gone)
    await h.apps.stop(h.app.app_id, "done")
    with pytest.raises(Conflict, match="f cannot be called: its app is stopped"):
        h.invoke.check_runnable(h.fn)
