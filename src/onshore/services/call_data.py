"""The data streams of calls: generator items and web responses from containers, request bodies to them."""

from __future__ import annotations

from collections.abc import AsyncIterator

from onshore.errors import PermissionDenied, Unavailable
from onshore.services.call_state import CallState
from onshore.services.calls import CallService

ROOM_WAIT_SECONDS = 60.0


class CallData:
    def __init__(self, calls: CallService) -> None:
        self._calls = calls

    def writable_by(self, call: CallState, task_id: str, app_id: str) -> bool:
        """Whether a container's data for the call is kept: False once the call has ended (a web request
        whose client went away), where it is dropped; PermissionDenied for a container not running it (one
        of another app always)."""
        if call.app_id != app_id:
            raise PermissionDenied(f"Function call {call.function_call_id} belongs to another app")
        if call.unfinished == 0 or call.data_out.closed:
            return False
        self._calls.check_call_access(call, task_id)
        return True

    async def put_out(self, call: CallState, chunks: list[tuple[int, bytes]]) -> None:
        """A container's data for the caller; waits (up to a minute) while the caller is far behind."""
        if not await call.data_out.wait_room(ROOM_WAIT_SECONDS) and not call.data_out.closed:
            raise Unavailable(f"The reader of function call {call.function_call_id} is not keeping up")
        call.data_out.put(chunks)

    async def read_out(self, call: CallState, last_index: int, wait: float = 50.0) -> AsyncIterator[bytes]:
        """Data chunks for the caller with an index above last_index; ends after `wait` seconds without new
        data. The client reconnects with its last index, and closes the stream once it has every item."""
        async for _, chunk in call.data_out.read(last_index, wait):
            yield chunk

    async def read_in(
        self, call: CallState, task_id: str, last_index: int, wait: float = 50.0
    ) -> AsyncIterator[bytes]:
        """The caller's data for a container running the call (a web request's body and events)."""
        self._calls.check_call_access(call, task_id)
        async for _, chunk in call.data_in.read(last_index, wait):
            yield chunk
