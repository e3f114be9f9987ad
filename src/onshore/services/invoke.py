"""Calling a function: the one path from "these inputs" to a call whose outputs can be awaited.

The gRPC handlers (a client's `.remote()`, `.map()`, `.spawn()`), the image build runner (Image.run_function)
and, later, the web gateway all start calls here; the call service keeps the queues and the outputs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from onshore.errors import Conflict
from onshore.models import FunctionRecord, OutputRecord, Payload
from onshore.services.apps import AppService
from onshore.services.call_state import CallState, PendingInput
from onshore.services.calls import CallService
from onshore.services.functions import FunctionService


class InvokeService:
    def __init__(self, apps: AppService, functions: FunctionService, calls: CallService) -> None:
        self._apps = apps
        self._functions = functions
        self._calls = calls

    def check_runnable(self, fn: FunctionRecord) -> None:
        """Conflict, naming its app's state, unless the function can take inputs now."""
        if not self._functions.is_runnable(fn.function_id):
            app = self._apps.find(fn.app_id)
            state = app.state.value if app else "gone"
            tag = self._functions.definition_of(fn).spec.tag
            raise Conflict(f"Function {tag} cannot be called: its app is {state}")

    def start(
        self, fn: FunctionRecord, call_type: int, invocation_type: int, inputs: Sequence[tuple[int, Payload]]
    ) -> tuple[CallState, list[PendingInput]]:
        """A new call of fn with its first inputs ((index, serialized FunctionInput) pairs), queued now."""
        self._calls.validate_new_inputs(len(inputs))
        call = self._calls.create_call(fn.function_id, fn.app_id, call_type, invocation_type)
        items = self._calls.add_inputs(call, inputs) if inputs else []
        return call, items

    def add(self, call: CallState, inputs: Sequence[tuple[int, Payload]]) -> list[PendingInput]:
        """More inputs of a call (a map's later batches)."""
        self._calls.validate_new_inputs(len(inputs))
        return self._calls.add_inputs(call, inputs)

    async def first_output(
        self, call: CallState, timeout: float, check: Callable[[], None] | None = None
    ) -> OutputRecord | None:
        """The call's first output, waiting up to timeout seconds (None if none came by then).

        check runs about every second while it waits, and may raise to end the wait (e.g. when the
        container meant to run the call is gone).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if check is not None:
                check()
            remaining = deadline - loop.time()
            outputs, _ = await self._calls.get_outputs(
                call,
                last_entry_id=0,
                idx_range=None,
                timeout=max(0.0, min(1.0, remaining)),
                clear_on_success=True,
            )
            if outputs:
                return outputs[0]
            if remaining <= 0:
                return None
