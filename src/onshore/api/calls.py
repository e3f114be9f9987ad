"""gRPC handlers for the caller's side of function calls: map, inputs, outputs, retries, generators."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from google.protobuf import empty_pb2
from modal_proto import api_pb2

from onshore.api.base import Principal
from onshore.errors import InvalidArgument, NotFound
from onshore.models import OutputRecord
from onshore.protocol.results import generic_result
from onshore.services.call_data import CallData
from onshore.services.call_state import CallState, PendingInput
from onshore.services.calls import CallService
from onshore.services.functions import FunctionService
from onshore.services.invoke import InvokeService

MAX_INPUTS_OUTSTANDING = 1000


def _entry_id(raw: str) -> int:
    if not raw:
        return 0
    try:
        return int(raw.split("-")[0])
    except ValueError:
        raise InvalidArgument(f"Bad last_entry_id {raw!r}") from None


def output_item(o: OutputRecord) -> api_pb2.FunctionGetOutputsItem:
    return api_pb2.FunctionGetOutputsItem(
        result=generic_result(o.result),
        idx=o.idx,
        input_id=o.input_id,
        data_format=cast(Any, o.data_format),
        task_id=o.task_id,
        input_started_at=o.input_started_at,
        output_created_at=o.output_created_at,
        retry_count=o.retry_count,
    )


def _input_jwt(item: PendingInput) -> str:
    return f"in:{item.input_id}"


class CallHandlers:
    def __init__(
        self, functions: FunctionService, calls: CallService, data: CallData, invoke: InvokeService
    ) -> None:
        self._functions = functions
        self._calls = calls
        self._data = data
        self._invoke = invoke

    def _call(self, function_call_id: str, who: Principal) -> CallState:
        if not function_call_id:
            raise InvalidArgument("function_call_id is required")
        call = self._calls.get_call(function_call_id)
        who.require_app(call.app_id)
        return call

    async def FunctionMap(
        self, req: api_pb2.FunctionMapRequest, who: Principal
    ) -> api_pb2.FunctionMapResponse:
        fn = self._functions.get(req.function_id)
        who.require_app(fn.app_id)
        self._invoke.check_runnable(fn)
        inputs = [(i.idx, i.input) for i in req.pipelined_inputs]
        call, items = self._invoke.start(
            fn, req.function_call_type, req.function_call_invocation_type, inputs
        )
        spec = self._functions.spec(fn.function_id) or self._functions.definition_of(fn).spec
        resp = api_pb2.FunctionMapResponse(
            function_call_id=call.function_call_id,
            function_call_jwt=call.jwt,
            sync_client_retries_enabled=False,  # the server retries failed inputs itself
            max_inputs_outstanding=MAX_INPUTS_OUTSTANDING,
        )
        resp.retry_policy.retries = spec.retry.max_retries
        resp.retry_policy.initial_delay_ms = spec.retry.initial_delay_ms
        resp.retry_policy.backoff_coefficient = spec.retry.backoff_coefficient
        resp.retry_policy.max_delay_ms = spec.retry.max_delay_ms
        if items:
            for item in items:
                resp.pipelined_inputs.add(idx=item.idx, input_id=item.input_id, input_jwt=_input_jwt(item))
            # Let a container that was waiting for this input receive it before the caller hears back:
            # the caller's next step (waiting for the output) is not urgent, the container's work is.
            await asyncio.sleep(0)
        return resp

    async def FunctionPutInputs(
        self, req: api_pb2.FunctionPutInputsRequest, who: Principal
    ) -> api_pb2.FunctionPutInputsResponse:
        call = self._call(req.function_call_id, who)
        if req.function_id and req.function_id != call.function_id:
            raise InvalidArgument(f"Function call {call.function_call_id} is not a call of {req.function_id}")
        items = self._invoke.add(call, [(i.idx, i.input) for i in req.inputs])
        resp = api_pb2.FunctionPutInputsResponse()
        for item in items:
            resp.inputs.add(idx=item.idx, input_id=item.input_id, input_jwt=_input_jwt(item))
        return resp

    async def FunctionGetOutputs(
        self, req: api_pb2.FunctionGetOutputsRequest, who: Principal
    ) -> api_pb2.FunctionGetOutputsResponse:
        call = self._call(req.function_call_id, who)
        idx_range = (req.start_idx, req.end_idx) if req.HasField("start_idx") else None
        outputs, last = await self._calls.get_outputs(
            call,
            last_entry_id=_entry_id(req.last_entry_id),
            idx_range=idx_range,
            timeout=min(max(req.timeout, 0.0), 55.0),
            clear_on_success=req.clear_on_success,
            max_values=req.max_values,
        )
        return api_pb2.FunctionGetOutputsResponse(
            outputs=[output_item(o) for o in outputs],
            last_entry_id=str(last),
            num_unfinished_inputs=call.unfinished,
        )

    async def FunctionFinishInputs(
        self, req: api_pb2.FunctionFinishInputsRequest, who: Principal
    ) -> empty_pb2.Empty:
        call = self._call(req.function_call_id, who)
        if req.function_id and req.function_id != call.function_id:
            raise InvalidArgument(f"Function call {call.function_call_id} is not a call of {req.function_id}")
        self._calls.finish_inputs(call, req.num_inputs)
        return empty_pb2.Empty()

    async def FunctionCallFromId(
        self, req: api_pb2.FunctionCallFromIdRequest, who: Principal
    ) -> api_pb2.FunctionCallFromIdResponse:
        call = self._call(req.function_call_id, who)
        return api_pb2.FunctionCallFromIdResponse(
            function_call_id=call.function_call_id,
            num_inputs=call.num_inputs,
            metadata=api_pb2.FunctionCallHandleMetadata(app_id=call.app_id, function_id=call.function_id),
        )

    async def FunctionRetryInputs(
        self, req: api_pb2.FunctionRetryInputsRequest, who: Principal
    ) -> api_pb2.FunctionRetryInputsResponse:
        if not req.function_call_jwt.startswith("fc:"):
            raise InvalidArgument("Bad function_call_jwt")
        call = self._call(req.function_call_jwt[3:], who)
        items = []
        for item in req.inputs:
            if not item.input_jwt.startswith("in:"):
                raise InvalidArgument("Bad input_jwt")
            items.append(
                (item.input_jwt[3:], item.input if item.HasField("input") else b"", item.retry_count)
            )
        retried = self._calls.retry_inputs(call, items)
        return api_pb2.FunctionRetryInputsResponse(input_jwts=[_input_jwt(i) for i in retried])

    async def FunctionCallCancel(
        self, req: api_pb2.FunctionCallCancelRequest, who: Principal
    ) -> empty_pb2.Empty:
        call = self._call(req.function_call_id, who)
        self._calls.cancel_call(call, req.terminate_containers)
        return empty_pb2.Empty()

    async def FunctionCallGetDataOut(
        self, req: api_pb2.FunctionCallGetDataRequest, who: Principal
    ) -> AsyncIterator[api_pb2.DataChunk]:
        if not req.function_call_id:
            raise NotFound("Data streams by attempt token are not supported; give function_call_id")
        call = self._call(req.function_call_id, who)
        async for chunk in self._data.read_out(call, int(req.last_index)):
            yield api_pb2.DataChunk.FromString(chunk)
