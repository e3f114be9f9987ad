"""CallService on an in-memory store: queues, hand-offs, outputs, retries, timeouts, restored calls."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from onshore.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from onshore.events import Events
from onshore.models import FunctionSpec, RetryPolicy
from onshore.services.call_state import (
    INVOCATION_ASYNC,
    INVOCATION_SYNC,
    STATUS_FAILURE,
    STATUS_SUCCESS,
    STATUS_TERMINATED,
    STATUS_TIMEOUT,
    CallState,
    ContainerOutput,
)
from onshore.services.calls import CallService
from onshore.services.clock import FakeClock
from onshore.store.memory import memory_store
from onshore.store.sqlite import SqliteStore

FN = "fu-unit"
APP = "ap-unit"
CALL_TYPE_UNARY = 1


def make_result(status: int, message: str) -> bytes:
    return f"{status}:{message}".encode()


class Harness:
    """A CallService with a fake clock, a dict of specs, and its hooks recorded."""

    def __init__(self, store: SqliteStore | None = None, **spec_settings: object) -> None:
        self.store = store or memory_store()
        self.clock = FakeClock()
        self.specs = {FN: FunctionSpec(tag="f", **spec_settings)}  # type: ignore[arg-type]
        events = Events()
        self.svc = CallService(
            self.store, self.specs.get, make_result, self.clock, input_wait_seconds=0.2, events=events
        )
        self.demand_events: list[str] = []
        self.killed: list[tuple[str, str]] = []
        events.demand_changed.connect(self.demand_events.append)
        events.kill_task.connect(lambda task_id, reason: self.killed.append((task_id, reason)))

    def call(
        self, invocation_type: int = INVOCATION_SYNC, payloads: tuple[bytes, ...] = (b"in-0",)
    ) -> CallState:
        call = self.svc.create_call(FN, APP, CALL_TYPE_UNARY, invocation_type)
        self.svc.add_inputs(call, list(enumerate(payloads)))
        return call

    def output(self, input_id: str, status: int = STATUS_SUCCESS, result: bytes = b"ok") -> ContainerOutput:
        return ContainerOutput(input_id, status, result, 1, self.clock.now(), self.clock.now(), 0)

    async def outputs(self, call: CallState, timeout: float = 0.0) -> list[tuple[int, int, bytes]]:
        found, _ = await self.svc.get_outputs(
            call, last_entry_id=0, idx_range=None, timeout=timeout, clear_on_success=False
        )
        return [(o.idx, o.status, o.result) for o in found]


async def test_enqueue_run_and_collect() -> None:
    h = Harness()
    call = h.call(payloads=(b"in-0", b"in-1"))
    assert h.demand_events == [FN]
    assert h.svc.demand(FN) == (2, 0)
    assert call.unfinished == 2

    taken = await h.svc.next_inputs("ta-1", FN, max_n=5)
    assert [(i.idx, i.payload) for i in taken] == [(0, b"in-0"), (1, b"in-1")]
    assert h.svc.demand(FN) == (0, 2)
    assert h.svc.task_busy("ta-1") == 2

    h.svc.put_outputs("ta-1", [h.output(taken[1].input_id, result=b"r1")])
    assert await h.outputs(call) == [(1, STATUS_SUCCESS, b"r1")]
    assert call.unfinished == 1
    h.svc.put_outputs("ta-1", [h.output(taken[0].input_id, result=b"r0")])
    assert sorted(await h.outputs(call)) == [(0, STATUS_SUCCESS, b"r0"), (1, STATUS_SUCCESS, b"r1")]
    assert h.svc.demand(FN) == (0, 0)
    assert h.svc.task_busy("ta-1") == 0
    # Later reads only see outputs newer than the last entry the caller has.
    found, last = await h.svc.get_outputs(
        call, last_entry_id=0, idx_range=None, timeout=0, clear_on_success=False
    )
    more, _ = await h.svc.get_outputs(
        call, last_entry_id=last, idx_range=None, timeout=0, clear_on_success=False
    )
    assert len(found) == 2 and more == []
    # A synchronous call is not written to the store.
    assert h.store.get_call(call.function_call_id) is None


async def test_waiting_caller_and_waiting_container_are_woken() -> None:
    h = Harness()
    # A container already waiting gets the input handed over directly.
    waiting = asyncio.create_task(h.svc.next_inputs("ta-1", FN))
    await asyncio.sleep(0)
    call = h.call()
    (item,) = await asyncio.wait_for(waiting, 1.0)
    assert item.call is call and h.svc.demand(FN) == (0, 1)
    # A caller already waiting for outputs is woken by the output (long before its timeout).
    reader = asyncio.create_task(h.outputs(call, timeout=10.0))
    await asyncio.sleep(0.01)
    assert not reader.done()
    h.svc.put_outputs("ta-1", [h.output(item.input_id)])
    assert await asyncio.wait_for(reader, 1.0) == [(0, STATUS_SUCCESS, b"ok")]


async def test_container_long_poll_ends_empty() -> None:
    h = Harness()
    assert await h.svc.next_inputs("ta-1", FN) == []  # after input_wait_seconds (0.2 s)
    assert await h.svc.next_inputs("ta-1", FN, wait=False) == []


async def test_only_the_assigned_container_may_answer() -> None:
    h = Harness()
    h.call()
    (item,) = await h.svc.next_inputs("ta-1", FN)
    with pytest.raises(PermissionDenied):
        h.svc.put_outputs("ta-2", [h.output(item.input_id)])
    # Outputs for inputs that are unknown (or already finished) are ignored.
    h.svc.put_outputs("ta-1", [h.output(item.input_id)])
    h.svc.put_outputs("ta-1", [h.output(item.input_id, result=b"again")])
    h.svc.put_outputs("ta-1", [h.output("in-unknown")])
    assert await h.outputs(item.call) == [(0, STATUS_SUCCESS, b"ok")]


async def test_failed_input_is_retried() -> None:
    h = Harness(retry=RetryPolicy(max_retries=2, initial_delay_ms=10, backoff_coefficient=1.0))
    call = h.call()
    (first,) = await h.svc.next_inputs("ta-1", FN)
    h.svc.put_outputs("ta-1", [h.output(first.input_id, STATUS_FAILURE, b"boom")])
    # Not finished: it waits out the retry delay, then is queued again.
    assert call.unfinished == 1 and await h.outputs(call) == []
    await asyncio.sleep(0.1)
    assert h.svc.demand(FN) == (1, 0)
    (second,) = await h.svc.next_inputs("ta-2", FN)
    assert second.input_id == first.input_id and second.retry_count == 1 and second.payload == b"in-0"
    h.svc.put_outputs("ta-2", [h.output(second.input_id, result=b"fine")])
    (out,), _ = await h.svc.get_outputs(
        call, last_entry_id=0, idx_range=None, timeout=0, clear_on_success=False
    )
    # The output carries the caller's retry count: a map's client drops outputs whose count differs from
    # its own, and the server's retries are its own business.
    assert (out.status, out.result, out.retry_count) == (STATUS_SUCCESS, b"fine", 0)


async def test_retries_run_out() -> None:
    h = Harness(retry=RetryPolicy(max_retries=2, initial_delay_ms=10, backoff_coefficient=1.0))
    call = h.call()
    for attempt in range(3):
        (item,) = await asyncio.wait_for(h.svc.next_inputs(f"ta-{attempt}", FN), 2.0)
        assert item.retry_count == attempt
        h.svc.put_outputs(
            f"ta-{attempt}", [h.output(item.input_id, STATUS_FAILURE, f"boom {attempt}".encode())]
        )
    (out,), _ = await h.svc.get_outputs(
        call, last_entry_id=0, idx_range=None, timeout=1, clear_on_success=False
    )
    assert (out.status, out.result, out.retry_count) == (STATUS_FAILURE, b"boom 2", 0)
    await asyncio.sleep(0.05)
    assert h.svc.demand(FN) == (0, 0)


async def test_input_of_a_dead_container_is_retried() -> None:
    h = Harness(retry=RetryPolicy(max_retries=1, initial_delay_ms=10))
    call = h.call()
    (item,) = await h.svc.next_inputs("ta-1", FN)
    assert h.svc.fail_task_inputs("ta-1", STATUS_FAILURE, "Container ta-1 died") == 1
    await asyncio.sleep(0.1)
    (again,) = await h.svc.next_inputs("ta-2", FN, wait=False)
    assert again.input_id == item.input_id
    # Without retries left, the container's death is the input's result.
    assert h.svc.fail_task_inputs("ta-2", STATUS_FAILURE, "Container ta-2 died") == 1
    assert await h.outputs(call) == [(0, STATUS_FAILURE, make_result(STATUS_FAILURE, "Container ta-2 died"))]


async def test_timeout_fails_the_input_and_kills_its_container() -> None:
    h = Harness(timeout_secs=1)
    call = h.call()
    (item,) = await h.svc.next_inputs("ta-1", FN)
    outputs = await h.outputs(call, timeout=3.0)  # real asyncio time: the 1 s timer fires first
    assert len(outputs) == 1
    idx, status, result = outputs[0]
    assert (idx, status) == (0, STATUS_TIMEOUT)
    assert b"timed out" in result
    assert [t for t, _ in h.killed] == ["ta-1"]
    assert h.svc.task_busy("ta-1") == 0 and h.svc.demand(FN) == (0, 0)
    # The late output of the timed-out input changes nothing.
    h.svc.put_outputs("ta-1", [h.output(item.input_id, result=b"late")])
    assert [s for _, s, _ in await h.outputs(call)] == [STATUS_TIMEOUT]


async def test_finished_input_cancels_its_timeout() -> None:
    h = Harness(timeout_secs=1)
    call = h.call()
    (item,) = await h.svc.next_inputs("ta-1", FN)
    h.svc.put_outputs("ta-1", [h.output(item.input_id)])
    await asyncio.sleep(1.2)
    assert h.killed == []
    assert await h.outputs(call) == [(0, STATUS_SUCCESS, b"ok")]


async def test_cancel_terminates_queued_inputs() -> None:
    h = Harness()
    call = h.call(payloads=(b"a", b"b"))
    (running,) = await h.svc.next_inputs("ta-1", FN)
    h.svc.cancel_call(call, terminate_containers=False)
    assert h.svc.demand(FN) == (0, 0)
    assert sorted(s for _, s, _ in await h.outputs(call)) == [STATUS_TERMINATED, STATUS_TERMINATED]
    # The container running one of them hears about it at its next heartbeat.
    assert h.svc.take_cancellations("ta-1") == [running.input_id]


async def test_spawned_call_is_persisted() -> None:
    h = Harness()
    call = h.call(INVOCATION_ASYNC, (b"a", b"b"))
    record = h.store.get_call(call.function_call_id)
    assert record is not None and (record.function_id, record.invocation_type) == (FN, INVOCATION_ASYNC)
    assert sorted(i.payload for i in h.store.unfinished_inputs()) == [b"a", b"b"]
    taken = await h.svc.next_inputs("ta-1", FN, max_n=2)
    h.svc.put_outputs("ta-1", [h.output(taken[0].input_id, result=b"ra")])
    assert [i.payload for i in h.store.unfinished_inputs()] == [taken[1].payload]
    assert [o.result for o in h.store.outputs_for_call(call.function_call_id)] == [b"ra"]


async def test_restore_requeues_unfinished_spawned_inputs() -> None:
    before = Harness()
    call = before.call(INVOCATION_ASYNC, (b"a", b"b", b"c"))
    taken = await before.svc.next_inputs("ta-1", FN, max_n=2)
    done = next(i for i in taken if i.payload == b"a")
    before.svc.put_outputs("ta-1", [before.output(done.input_id, result=b"ra")])
    # "Restart": a new service on the same store; the in-flight input (b) and the queued one (c) come back.
    after = Harness(store=before.store)
    assert after.svc.restore(lambda function_id: function_id == FN) == (2, 0)
    assert after.svc.demand(FN) == (2, 0)
    assert FN in after.demand_events
    restored = after.svc.get_call(call.function_call_id)
    assert restored.unfinished == 2
    assert [result for _, _, result in await after.outputs(restored)] == [b"ra"]
    rerun = await after.svc.next_inputs("ta-2", FN, max_n=5)
    assert sorted(i.payload for i in rerun) == [b"b", b"c"]
    # The same inputs as before the restart, not copies.
    assert {i.input_id for i in rerun} == {i.input_id for i in call.inputs.values() if i.payload != b"a"}
    after.svc.put_outputs("ta-2", [after.output(i.input_id, result=b"r" + i.payload) for i in rerun])
    assert sorted(result for _, _, result in await after.outputs(restored)) == [b"ra", b"rb", b"rc"]
    assert restored.unfinished == 0
    assert after.store.unfinished_inputs() == []


async def test_restore_fails_inputs_of_gone_apps() -> None:
    before = Harness()
    call = before.call(INVOCATION_ASYNC)
    after = Harness(store=before.store)
    assert after.svc.restore(lambda function_id: False) == (0, 1)
    assert after.svc.demand(FN) == (0, 0)
    outputs = await after.outputs(after.svc.get_call(call.function_call_id))
    assert [s for _, s, _ in outputs] == [STATUS_TERMINATED]
    assert b"restarted" in outputs[0][2]
    assert after.store.unfinished_inputs() == []


async def test_unknown_call_is_not_found() -> None:
    h = Harness()
    with pytest.raises(NotFound):
        h.svc.get_call("fc-doesnotexist")
    with pytest.raises(NotFound):
        h.svc.get_call("garbage")


async def test_client_driven_retry_echoes_the_callers_retry_count() -> None:
    h = Harness()
    call = h.call()
    (first,) = await h.svc.next_inputs("ta-1", FN)
    h.svc.put_outputs("ta-1", [h.output(first.input_id, STATUS_FAILURE, b"boom")])
    assert [o.retry_count for o in call.outputs] == [0]
    # The caller asks for attempt 3 (its own count): the new attempt's output says so.
    h.svc.retry_inputs(call, [(first.input_id, b"in-0 again", 3)])
    (again,) = await h.svc.next_inputs("ta-2", FN)
    assert again.payload == b"in-0 again"
    h.svc.put_outputs("ta-2", [h.output(again.input_id, result=b"fine")])
    assert [(o.result, o.retry_count) for o in call.outputs] == [(b"boom", 0), (b"fine", 3)]


async def test_finishing_a_spawned_map_checks_its_input_count() -> None:
    h = Harness()
    call = h.call(invocation_type=INVOCATION_ASYNC, payloads=(b"a", b"b"))
    h.svc.finish_inputs(call, 2)
    with pytest.raises(InvalidArgument, match="has 2 inputs, but the caller finished it with 3"):
        h.svc.finish_inputs(call, 3)


async def test_finished_calls_nobody_asks_about_leave_memory() -> None:
    h = Harness()
    abandoned = h.call(payloads=(b"a", b"b"))
    running = h.call()  # still has an input to run
    spawned = h.call(invocation_type=INVOCATION_ASYNC)
    taken = await h.svc.next_inputs("ta-1", FN, max_n=10)
    done = [i for i in taken if i.call is not running]
    h.svc.put_outputs("ta-1", [h.output(i.input_id) for i in done])
    assert (abandoned.unfinished, running.unfinished, spawned.unfinished) == (0, 1, 0)
    h.clock.advance(300)
    polled = h.call()  # a caller that keeps asking is not forgotten
    (one,) = await h.svc.next_inputs("ta-2", FN)
    h.svc.put_outputs("ta-2", [h.output(one.input_id)])
    h.clock.advance(400)
    await h.outputs(polled)
    assert h.svc.release_idle(600) == 2
    with pytest.raises(NotFound):
        h.svc.get_call(abandoned.function_call_id)
    # Unfinished calls and calls still being polled stay.
    assert h.svc.get_call(running.function_call_id) is running
    assert h.svc.get_call(polled.function_call_id) is polled
    # A spawned call left memory, not the store: asked for again, it is loaded with its output.
    reloaded = h.svc.get_call(spawned.function_call_id)
    assert reloaded is not spawned and [o.result for o in reloaded.outputs] == [b"ok"]


async def test_a_spawned_calls_output_is_stored_before_it_is_published(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "onshore.db")
    other = sqlite3.connect(tmp_path / "onshore.db", isolation_level=None)
    try:
        h = Harness(store=store)
        call = h.call(invocation_type=INVOCATION_ASYNC)
        (item,) = await h.svc.next_inputs("ta-1", FN)
        other.execute("BEGIN EXCLUSIVE")  # another process locks the database
        with pytest.raises(Unavailable):
            h.svc.put_outputs("ta-1", [h.output(item.input_id, result=b"ok")])
        # Nothing changed in memory: the input is still the container's, and its caller sees no output.
        assert (call.unfinished, call.outputs, item.task_id) == (1, [], "ta-1")
        other.execute("ROLLBACK")
        h.svc.put_outputs("ta-1", [h.output(item.input_id, result=b"ok")])  # the container sends it again
        assert await h.outputs(call) == [(0, STATUS_SUCCESS, b"ok")]
        assert [o.result for o in store.outputs_for_call(call.function_call_id)] == [b"ok"]

        # What no caller waits on (a container that died) is recorded once the database answers again.
        lost = h.call(invocation_type=INVOCATION_ASYNC)
        await h.svc.next_inputs("ta-2", FN)
        other.execute("BEGIN EXCLUSIVE")
        assert h.svc.fail_task_inputs("ta-2", STATUS_FAILURE, "its container died") == 1
        assert lost.unfinished == 1
        other.execute("ROLLBACK")
        await asyncio.sleep(1.5)
        assert lost.unfinished == 0
        assert [o.status for o in store.outputs_for_call(lost.function_call_id)] == [STATUS_FAILURE]
    finally:
        other.close()
        store.close()


async def test_ends_the_store_could_not_record_wait_in_line_and_skip_attempts_that_moved_on(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "onshore.db")
    other = sqlite3.connect(tmp_path / "onshore.db", isolation_level=None)
    try:
        h = Harness(store=store)
        call = h.call(invocation_type=INVOCATION_ASYNC, payloads=(b"a", b"b"))
        first, second = await h.svc.next_inputs("ta-1", FN, max_n=2)
        other.execute("BEGIN EXCLUSIVE")
        started = asyncio.get_running_loop().time()
        assert h.svc.fail_task_inputs("ta-1", STATUS_FAILURE, "its container died") == 2
        # One busy wait on the locked database, not one per input: the second end waits in line.
        assert asyncio.get_running_loop().time() - started < 1.8
        # Before the store answers again, the first input runs again elsewhere (its attempt moved on).
        h.svc.give_back("ta-1", [first])
        (again,) = await h.svc.next_inputs("ta-3", FN)
        assert again is first
        other.execute("ROLLBACK")
        await asyncio.sleep(1.5)
        # The stale end of the first attempt was dropped; the second input's end was recorded.
        assert (first.done, first.task_id, second.done) == (False, "ta-3", True)
        h.svc.put_outputs("ta-3", [h.output(first.input_id, result=b"fine")])
        stored = {o.input_id: o.status for o in store.outputs_for_call(call.function_call_id)}
        assert stored == {first.input_id: STATUS_SUCCESS, second.input_id: STATUS_FAILURE}
    finally:
        other.close()
        store.close()


async def test_a_batch_of_spawned_inputs_is_stored_whole_or_not_at_all(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "onshore.db")
    other = sqlite3.connect(tmp_path / "onshore.db", isolation_level=None)
    try:
        h = Harness(store=store)
        call = h.svc.create_call(FN, APP, CALL_TYPE_UNARY, INVOCATION_ASYNC)
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(Unavailable):
            h.svc.add_inputs(call, [(0, b"a"), (1, b"b"), (2, b"c")])
        assert (call.num_inputs, call.inputs, h.svc.demand(FN)) == (0, {}, (0, 0))
        other.execute("ROLLBACK")
        h.svc.add_inputs(call, [(0, b"a"), (1, b"b"), (2, b"c")])  # the client sends the batch again
        h.svc.finish_inputs(call, 3)
        assert len(store.inputs_for_call(call.function_call_id)) == 3
    finally:
        other.close()
        store.close()
