"""Function calls: input queues, hand-off to waiting containers, outputs, retries and timeouts.

The hot path (enqueue an input, give it to a container that is already waiting, hand the output to a
caller that is already waiting) stays in memory and wakes waiters directly; nothing polls. Only spawned
(asynchronous) calls are written to the store, so that their inputs and results survive a restart.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
from collections.abc import Callable, Sequence
from typing import cast

from onshore import ids
from onshore.errors import InvalidArgument, NotFound, PermissionDenied
from onshore.events import Events
from onshore.models import CallRecord, FunctionSpec, OutputRecord, Payload, StoredInput, encoded
from onshore.services.call_state import (
    INVOCATION_ASYNC,
    INVOCATION_ASYNC_LEGACY,
    MAP_BATCH_TARGET,
    MAP_LINGER_SECONDS,
    MAX_OUTPUTS_PER_RESPONSE,
    STATUS_SUCCESS,
    STATUS_TERMINATED,
    STATUS_TIMEOUT,
    CallState,
    ContainerOutput,
    FinishedInput,
    FunctionQueue,
    InputHistory,
    PendingInput,
    TaskCancels,
)
from onshore.services.clock import Clock
from onshore.services.unrecorded import UnrecordedEnds
from onshore.services.waiters import resolve
from onshore.store.base import CallStore

log = logging.getLogger("onshore.calls")

SpecLookup = Callable[[str], "FunctionSpec | None"]
HISTORY_PER_APP = 200  # finished inputs remembered per app, for the app pages
ResultFactory = Callable[[int, str], bytes]


class CallService:
    def __init__(
        self,
        store: CallStore,
        specs: SpecLookup,
        make_result: ResultFactory,
        clock: Clock,
        input_wait_seconds: float = 25.0,
        events: Events | None = None,
    ) -> None:
        self._store = store
        self._specs = specs
        self._make_result = make_result
        self._clock = clock
        self._input_wait = input_wait_seconds
        self._calls: dict[str, CallState] = {}
        self._inputs: dict[str, PendingInput] = {}
        self._queues: dict[str, FunctionQueue] = collections.defaultdict(FunctionQueue)
        self._task_inputs: dict[str, set[str]] = collections.defaultdict(set)
        self._cancels = TaskCancels()
        self._unrecorded = UnrecordedEnds(lambda item, status, result: self._finish(item, status, result))
        self._events = events or Events()
        self._history = InputHistory(HISTORY_PER_APP)

    # ---------------------------------------------------------------- queries used by the autoscaler
    def demand(self, function_id: str) -> tuple[int, int]:
        """(queued, running) inputs of a function."""
        q = self._queues.get(function_id)
        if q is None:
            return 0, 0
        return len(q.pending), q.inflight

    def functions_with_demand(self) -> list[str]:
        return [fid for fid, q in self._queues.items() if q.pending or q.inflight]

    def task_busy(self, task_id: str) -> int:
        return len(self._task_inputs.get(task_id, ()))

    def recent_inputs(self, app_id: str) -> list[FinishedInput]:
        """The app's latest finished inputs, newest first."""
        return self._history.recent(app_id)

    # ---------------------------------------------------------------- caller side
    def create_call(self, function_id: str, app_id: str, call_type: int, invocation_type: int) -> CallState:
        persistent = invocation_type in (INVOCATION_ASYNC, INVOCATION_ASYNC_LEGACY)
        call = CallState(
            function_call_id=ids.new_id("call"),
            function_id=function_id,
            app_id=app_id,
            call_type=call_type,
            invocation_type=invocation_type,
            persistent=persistent,
            created_at=self._clock.now(),
            last_polled=self._clock.monotonic(),
        )
        if persistent:
            self._store.put_call(
                CallRecord(
                    call.function_call_id, function_id, app_id, invocation_type, call.created_at, call_type
                )
            )
        self._calls[call.function_call_id] = call  # published once stored
        return call

    def get_call(self, function_call_id: str) -> CallState:
        call = self._calls.get(function_call_id)
        if call is not None:
            return call
        record = self._store.get_call(function_call_id) if ids.is_id("call", function_call_id) else None
        if record is None:
            raise NotFound(f"Function call {function_call_id} not found")
        call = CallState(
            function_call_id=record.function_call_id,
            function_id=record.function_id,
            app_id=record.app_id,
            call_type=record.call_type,
            invocation_type=record.invocation_type,
            persistent=True,
            created_at=record.created_at,
        )
        stored_inputs = self._store.inputs_for_call(function_call_id)
        call.num_inputs = len(stored_inputs)
        for out in self._store.outputs_for_call(function_call_id):
            out.entry_id = call.next_entry_id
            call.next_entry_id += 1
            call.outputs.append(out)
        call.num_done = len(call.outputs)
        self._calls[function_call_id] = call
        return call

    def add_inputs(self, call: CallState, items: Sequence[tuple[int, Payload]]) -> list[PendingInput]:
        created = [PendingInput(ids.new_id("input"), call, idx, payload) for idx, payload in items]
        if call.persistent:  # the batch is stored first, in one transaction: a failure publishes none of it
            self._store.put_inputs(
                [
                    StoredInput(
                        i.input_id, call.function_call_id, call.function_id, i.idx, encoded(i.payload)
                    )
                    for i in created
                ]
            )
        for item in created:
            call.num_inputs += 1
            call.inputs[item.input_id] = item
            self._inputs[item.input_id] = item
        queue = self._queues[call.function_id]
        for item in created:
            queue.offer(item)
        self._events.demand_changed.emit(call.function_id)
        return created

    def retry_inputs(self, call: CallState, items: Sequence[tuple[str, Payload, int]]) -> list[PendingInput]:
        """A client-driven retry (FunctionRetryInputs): run the named inputs again.

        Each item is (input id, payload, the caller's retry count); the output of the new attempt carries
        that count back, as the caller matches it against its own.
        """
        requeued = []
        for input_id, payload, client_retry_count in items:
            item = call.inputs.get(input_id)
            if item is None:
                raise NotFound(f"Input {input_id} is not part of function call {call.function_call_id}")
            if not item.done:
                continue
            item.done = False
            item.payload = payload or item.payload
            item.retry_count += 1
            item.client_retry_count = client_retry_count
            call.num_done -= 1
            self._inputs[input_id] = item
            self._queues[call.function_id].offer(item)
            requeued.append(item)
        self._events.demand_changed.emit(call.function_id)
        return requeued

    def finish_inputs(self, call: CallState, num_inputs: int) -> None:
        """The caller has sent every input of a spawned map (FunctionFinishInputs): check none is missing."""
        if num_inputs != call.num_inputs:
            raise InvalidArgument(
                f"Function call {call.function_call_id} has {call.num_inputs} inputs, "
                f"but the caller finished it with {num_inputs}"
            )

    async def get_outputs(
        self,
        call: CallState,
        *,
        last_entry_id: int,
        idx_range: tuple[int, int] | None,
        timeout: float,
        clear_on_success: bool,
        max_values: int = 0,
    ) -> tuple[list[OutputRecord], int]:
        """Outputs newer than last_entry_id (or within idx_range), waiting up to timeout for the first."""
        if clear_on_success and idx_range is None and timeout <= 0:
            # The caller acknowledges it has every output it wants: release the call's memory.
            for o in call.outputs:
                call.cleared.add(o.input_id)
            self._release(call)
            return [], last_entry_id
        call.last_polled = self._clock.monotonic()
        # Waits run on the event loop's own clock; the injected clock only stamps records.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        limit = max_values if max_values > 0 else MAX_OUTPUTS_PER_RESPONSE
        while True:
            if idx_range is not None:
                lo, hi = idx_range
                found = [o for o in call.outputs if lo <= o.idx <= hi and o.input_id not in call.cleared]
            else:
                # Outputs are appended in entry-id order: find the first new one by bisection.
                start = bisect.bisect_right(call.outputs, last_entry_id, key=lambda o: o.entry_id)
                found = call.outputs[start : start + limit]
                if found and call.unfinished and len(found) < MAP_BATCH_TARGET:
                    # A map's caller polls again at once: give a few more outputs a moment to arrive, so
                    # one response carries several (fewer polls, less CPU on both sides).
                    linger_until = loop.time() + MAP_LINGER_SECONDS
                    while call.unfinished and len(found) < MAP_BATCH_TARGET:
                        remaining = linger_until - loop.time()
                        if remaining <= 0:
                            break
                        await call.wait_change(remaining)
                        found = call.outputs[start : start + limit]
            found = found[:limit]
            if found:
                new_last = max(last_entry_id, max(o.entry_id for o in found))
                if clear_on_success:
                    self._clear(call, found)
                return found, new_last
            remaining = deadline - loop.time()
            if remaining <= 0:
                return [], last_entry_id
            await call.wait_change(remaining)

    def _clear(self, call: CallState, outputs: list[OutputRecord]) -> None:
        for o in outputs:
            call.cleared.add(o.input_id)
        if not call.persistent and call.unfinished == 0 and len(call.cleared) >= call.num_inputs:
            self._release(call)

    def release_idle(self, idle_seconds: float) -> int:
        """Drop from memory the finished calls nobody has asked about for idle_seconds.

        A call's caller may go away without acknowledging its outputs (a map's client that was killed); a
        spawned call's outputs stay in the store, and get_call loads them again when they are asked for.
        """
        cutoff = self._clock.monotonic() - idle_seconds
        idle = [c for c in self._calls.values() if c.unfinished == 0 and c.last_polled < cutoff]
        for call in idle:
            self._calls.pop(call.function_call_id, None)
        return len(idle)

    def _release(self, call: CallState) -> None:
        if call.persistent or call.unfinished:
            return
        self._calls.pop(call.function_call_id, None)

    def cancel_call(self, call: CallState, terminate_containers: bool) -> None:
        for item in list(call.inputs.values()):
            if item.done:
                continue
            if item.task_id:
                if terminate_containers:
                    reason = f"function call {call.function_call_id} was cancelled"
                    self._events.kill_task.emit(item.task_id, reason)
                else:
                    self._cancels.add(item.task_id, item.input_id)
            else:
                queue = self._queues.get(call.function_id)
                if queue is not None and item in queue.pending:
                    queue.pending.remove(item)
            self._finish(
                item, STATUS_TERMINATED, self._make_result(STATUS_TERMINATED, "Function call was cancelled")
            )

    # ---------------------------------------------------------------- container side
    async def next_inputs(
        self, task_id: str, function_id: str, max_n: int = 1, wait: bool = True
    ) -> list[PendingInput]:
        """Long-poll for inputs of a function on behalf of a container (or take what is queued now)."""
        queue = self._queues[function_id]
        taken: list[PendingInput] = []
        while queue.pending and len(taken) < max_n:
            taken.append(queue.pending.popleft())
        if not taken and not wait:
            return []
        if not taken:
            # Awaited directly (a timer ends the wait with None): the container's request resumes in the
            # next turn of the loop after offer() hands it an input.
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[PendingInput | None] = loop.create_future()
            queue.waiters.append(fut)
            timer = loop.call_later(self._input_wait, resolve, fut, None)
            try:
                item = await fut
            except asyncio.CancelledError:
                # The container went away mid-poll: put back anything handed to it.
                if fut.done() and not fut.cancelled() and fut.result() is not None:
                    queue.offer(cast(PendingInput, fut.result()), front=True)
                else:
                    fut.cancel()
                raise
            finally:
                timer.cancel()
            if item is None:
                return []
            taken.append(item)
        spec = self._specs(function_id)
        now = self._clock.now()
        for item in taken:
            item.task_id = task_id
            item.started_at = now
            queue.inflight += 1
            self._task_inputs[task_id].add(item.input_id)
            if spec is not None and spec.timeout_secs > 0:
                item.timer = asyncio.get_running_loop().call_later(
                    spec.timeout_secs, self._on_timeout, item, spec.timeout_secs
                )
        return taken

    def give_back(self, task_id: str, items: list[PendingInput]) -> None:
        """Undo next_inputs for inputs a container will not run: they wait for another container."""
        for item in reversed(items):
            if item.timer is not None:
                item.timer.cancel()
                item.timer = None
            queue = self._queues[item.call.function_id]
            queue.inflight = max(0, queue.inflight - 1)
            self._task_inputs.get(task_id, set()).discard(item.input_id)
            item.task_id = ""
            queue.offer(item, front=True)
        if items:
            self._events.demand_changed.emit(items[0].call.function_id)

    def put_outputs(self, task_id: str, outputs: list[ContainerOutput]) -> None:
        for out in outputs:
            item = self._inputs.get(out.input_id)
            if item is None or item.done:
                continue  # late output of an input that already timed out or was cancelled
            if item.task_id != task_id:
                raise PermissionDenied(f"Input {out.input_id} is not assigned to this container")
            self._finish(
                item,
                out.status,
                out.result,
                data_format=out.data_format,
                input_started_at=out.input_started_at,
                output_created_at=out.output_created_at,
            )

    def check_call_access(self, call: CallState, task_id: str) -> None:
        """A container may write data only for calls whose inputs it is running."""
        if not any(i.task_id == task_id and not i.done for i in call.inputs.values()):
            raise PermissionDenied(f"Function call {call.function_call_id} is not running in this container")

    def take_cancellations(self, task_id: str) -> list[str]:
        return self._cancels.take(task_id)

    async def wait_cancellations(self, task_id: str, timeout: float) -> list[str]:
        """The inputs cancelled on a container, waiting up to `timeout` for one (a container's heartbeat is
        held open, so a cancellation reaches it at once instead of at its next heartbeat)."""
        return await self._cancels.wait(task_id, timeout)

    def requeue_task_inputs(self, task_id: str) -> int:
        """Put the inputs in flight on a container back in their queues, for other containers to run."""
        items = [self._inputs[i] for i in self._task_inputs.get(task_id, ()) if i in self._inputs]
        items = [item for item in items if not item.done]
        self.give_back(task_id, items)
        return len(items)

    def fail_task_inputs(self, task_id: str, status: int, message: str) -> int:
        """Fail (or retry) every input in flight on a container that is gone."""
        input_ids = self._task_inputs.pop(task_id, set())
        self._cancels.take(task_id)
        count = 0
        for input_id in input_ids:
            item = self._inputs.get(input_id)
            if item is None or item.done:
                continue
            self._finish_in_background(item, status, self._make_result(status, message))
            count += 1
        return count

    def fail_queued(self, function_id: str, status: int, result: bytes) -> int:
        """Fail every input still waiting for a container of this function (its containers cannot start)."""
        queue = self._queues.get(function_id)
        if queue is None:
            return 0
        items = list(queue.pending)
        queue.pending.clear()
        for item in items:
            item.retryable = False  # a container that cannot start will not do better on a retry
            self._finish_in_background(item, status, result)
        return len(items)

    def _on_timeout(self, item: PendingInput, seconds: int) -> None:
        if item.done:
            return
        task_id = item.task_id
        message = f"Function call timed out after {seconds} seconds (timeout={seconds})"
        log.info("input %s on %s timed out after %ss", item.input_id, task_id, seconds)
        self._finish_in_background(item, STATUS_TIMEOUT, self._make_result(STATUS_TIMEOUT, message))
        if task_id:
            self._events.kill_task.emit(task_id, f"an input ran past its timeout of {seconds}s")

    def _finish(
        self,
        item: PendingInput,
        status: int,
        result: Payload,
        *,
        data_format: int = 0,
        input_started_at: float = 0.0,
        output_created_at: float = 0.0,
    ) -> None:
        """End an attempt of an input: run it again under the function's retry policy, or record its output.

        A spawned call's store is written first: if that fails (a locked or full database), nothing changes
        in memory and the error reaches the caller (a container sends its output again on UNAVAILABLE).
        """
        call = item.call
        spec = self._specs(call.function_id)
        retry = (
            status not in (STATUS_SUCCESS, STATUS_TERMINATED)
            and item.retryable
            and spec is not None
            and item.retry_count < spec.retry.max_retries
        )
        task_id = item.task_id
        output: OutputRecord | None = None
        if retry:
            if call.persistent:
                self._store.put_input(
                    StoredInput(
                        item.input_id,
                        call.function_call_id,
                        call.function_id,
                        item.idx,
                        encoded(item.payload),
                        item.retry_count + 1,
                    )
                )
        else:
            output = OutputRecord(
                input_id=item.input_id,
                function_call_id=call.function_call_id,
                idx=item.idx,
                status=status,
                result=encoded(result) if call.persistent else result,
                data_format=data_format,
                task_id=task_id,
                input_started_at=input_started_at,
                output_created_at=output_created_at or self._clock.now(),
                retry_count=item.client_retry_count,
                entry_id=call.next_entry_id,
            )
            if call.persistent:
                self._store.put_output(output)
        # Stored (or nothing to store): now the in-memory state follows.
        if item.timer is not None:
            item.timer.cancel()
            item.timer = None
        if task_id:
            queue = self._queues[call.function_id]
            queue.inflight = max(0, queue.inflight - 1)
            self._task_inputs.get(task_id, set()).discard(item.input_id)
        item.task_id = ""
        if output is None:
            assert spec is not None
            item.retry_count += 1
            delay = spec.retry.delay_for(item.retry_count)
            log.info("retrying input %s (attempt %d) in %.2fs", item.input_id, item.retry_count + 1, delay)
            attempts = spec.retry.max_retries + 1
            self._events.input_note.emit(
                call.app_id,
                task_id,
                call.function_id,
                f"Input {item.input_id} failed on attempt {item.retry_count} of {attempts}; "
                f"retrying in {delay:g}s\n",
            )
            asyncio.get_running_loop().call_later(delay, self._requeue, item)
            return
        if status not in (STATUS_SUCCESS, STATUS_TERMINATED) and item.retry_count and spec is not None:
            attempts = item.retry_count + 1
            self._events.input_note.emit(
                call.app_id,
                task_id,
                call.function_id,
                f"Input {item.input_id} failed after {attempts} attempts "
                f"(retries={spec.retry.max_retries}); its error is the last attempt's\n",
            )
        item.done = True
        self._inputs.pop(item.input_id, None)
        self._history.add(
            call.app_id,
            FinishedInput(
                call.function_id,
                item.input_id,
                call.function_call_id,
                status,
                call.created_at,
                input_started_at or item.started_at,
                output.output_created_at,
            ),
        )
        call.next_entry_id += 1
        call.outputs.append(output)
        call.num_done += 1
        call.notify()
        if call.forgotten and not call.unfinished:
            self._release(call)

    def _finish_in_background(self, item: PendingInput, status: int, result: Payload) -> None:
        """_finish for what no caller waits on (a timeout, a dead container, a stopped app): recorded even
        while the store fails for a while (see UnrecordedEnds)."""
        self._unrecorded.end(item, status, result)

    def _requeue(self, item: PendingInput) -> None:
        if item.done:
            return
        self._queues[item.call.function_id].offer(item, front=True)
        self._events.demand_changed.emit(item.call.function_id)

    def forget(self, call: CallState) -> None:
        """The caller is done with a call (a web request answered, or its client gone): its streams close,
        and it is dropped once its inputs have ended (the container may still report them)."""
        call.data_in.close()
        call.data_out.close()
        call.forgotten = True
        if not call.unfinished:
            self._release(call)

    # ---------------------------------------------------------------- lifecycle
    def drop_app_calls(self, app_id: str, reason: str) -> None:
        """Fail queued inputs of a stopped app and forget its in-memory calls."""
        for call in list(self._calls.values()):
            if call.app_id != app_id:
                continue
            for item in list(call.inputs.values()):
                if item.done:
                    continue
                queue = self._queues.get(call.function_id)
                if queue is not None and item in queue.pending:
                    queue.pending.remove(item)
                item.retryable = False  # no retries for an app that is gone
                result = self._make_result(STATUS_TERMINATED, reason)
                self._finish_in_background(item, STATUS_TERMINATED, result)
            call.data_in.close()
            if not call.persistent:
                self._calls.pop(call.function_call_id, None)

    def restore(self, live_function: Callable[[str], bool]) -> tuple[int, int]:
        """After a restart: queue again every spawned input that had not finished, or fail it clearly."""
        requeued = failed = 0
        for stored in self._store.unfinished_inputs():
            call = self.get_call(stored.function_call_id)
            item = PendingInput(stored.input_id, call, stored.idx, stored.payload, stored.retry_count)
            call.inputs[item.input_id] = item
            self._inputs[item.input_id] = item
            if live_function(call.function_id):
                self._queues[call.function_id].offer(item)
                requeued += 1
            else:
                item.retryable = False
                msg = "The server restarted and this call's app no longer runs, so the call was not run again"
                self._finish_in_background(item, STATUS_TERMINATED, self._make_result(STATUS_TERMINATED, msg))
                failed += 1
        for function_id in list(self._queues):
            if self._queues[function_id].pending:
                self._events.demand_changed.emit(function_id)
        return requeued, failed

    def validate_new_inputs(self, count: int) -> None:
        if count > 10_000:
            raise InvalidArgument(f"Too many inputs in one request ({count}); the limit is 10000")
