"""gRPC handlers for the container's side: hello, heartbeats, inputs, outputs, generator data, results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

from google.protobuf import empty_pb2
from modal_proto import api_pb2

from onshore.api.base import Principal
from onshore.errors import InvalidArgument, PermissionDenied
from onshore.services.call_data import CallData
from onshore.services.call_state import ContainerOutput
from onshore.services.calls import CallService
from onshore.services.container_inputs import ContainerInputs
from onshore.services.containers import ContainerService, Task

HEARTBEAT_HOLD_SECONDS = 12.0


def _call_id(req: api_pb2.FunctionCallGetDataRequest | api_pb2.FunctionCallPutDataRequest) -> str:
    if not req.function_call_id:
        raise InvalidArgument("Data streams by attempt token are not supported; give function_call_id")
    return req.function_call_id


def _task(who: Principal) -> Task:
    if who.task is None:
        raise PermissionDenied("Only containers may call this")
    return who.task


class ContainerHandlers:
    def __init__(
        self, calls: CallService, data: CallData, containers: ContainerService, inputs: ContainerInputs
    ) -> None:
        self._calls = calls
        self._data = data
        self._containers = containers
        self._inputs = inputs

    async def ContainerHello(self, req: empty_pb2.Empty, who: Principal) -> empty_pb2.Empty:
        self._inputs.hello(_task(who))
        return empty_pb2.Empty()

    async def ContainerHeartbeat(
        self, req: api_pb2.ContainerHeartbeatRequest, who: Principal
    ) -> api_pb2.ContainerHeartbeatResponse:
        task = _task(who)
        resp = api_pb2.ContainerHeartbeatResponse()
        # The container's client (it sets canceled_inputs_return_outputs_v2) waits up to its heartbeat
        # interval (15 s) for an answer, and sends the next heartbeat that long after the last one began:
        # held open, its heartbeat delivers a cancellation at once. Other callers get an answer now.
        hold = HEARTBEAT_HOLD_SECONDS if req.canceled_inputs_return_outputs_v2 else 0.0
        cancelled = await self._calls.wait_cancellations(task.task_id, hold)
        if cancelled:
            resp.cancel_input_event.input_ids.extend(cancelled)
        return resp

    async def FunctionGetInputs(
        self, req: api_pb2.FunctionGetInputsRequest, who: Principal
    ) -> api_pb2.FunctionGetInputsResponse:
        task = _task(who)
        batch = await self._inputs.next_batch(task, req.function_id, req.batch_max_size, req.batch_linger_ms)
        resp = api_pb2.FunctionGetInputsResponse()
        if batch.stop:
            resp.inputs.add(kill_switch=True)
        for item, final in batch.items:
            entry = resp.inputs.add(
                input_id=item.input_id,
                function_call_id=item.call.function_call_id,
                function_call_invocation_type=item.call.invocation_type,
                retry_count=item.retry_count,
                function_map_idx=item.idx,
            )
            if isinstance(item.payload, bytes):
                entry.input.ParseFromString(item.payload)
            else:
                entry.input.CopyFrom(cast(api_pb2.FunctionInput, item.payload))
            if final:
                entry.input.final_input = True
        return resp

    async def FunctionPutOutputs(
        self, req: api_pb2.FunctionPutOutputsRequest, who: Principal
    ) -> empty_pb2.Empty:
        task = _task(who)
        outputs = [
            ContainerOutput(
                input_id=o.input_id,
                status=o.result.status,
                result=o.result,
                data_format=o.data_format,
                input_started_at=o.input_started_at,
                output_created_at=o.output_created_at,
                retry_count=o.retry_count,
            )
            for o in req.outputs
        ]
        self._calls.put_outputs(task.task_id, outputs)
        self._containers.touch(task)
        # Let a caller waiting for these outputs hear first; the container's acknowledgement can wait a turn.
        await asyncio.sleep(0)
        return empty_pb2.Empty()

    async def FunctionCallPutDataOut(
        self, req: api_pb2.FunctionCallPutDataRequest, who: Principal
    ) -> empty_pb2.Empty:
        task = _task(who)
        call = self._calls.get_call(_call_id(req))
        if self._data.writable_by(call, task.task_id, task.app_id):
            await self._data.put_out(
                call, [(int(c.index), bytes(c.SerializeToString())) for c in req.data_chunks]
            )
        return empty_pb2.Empty()

    async def FunctionCallGetDataIn(
        self, req: api_pb2.FunctionCallGetDataRequest, who: Principal
    ) -> AsyncIterator[api_pb2.DataChunk]:
        """The caller's data for a call the container runs: a web request's body and its events."""
        task = _task(who)
        call = self._calls.get_call(_call_id(req))
        async for chunk in self._data.read_in(call, task.task_id, int(req.last_index)):
            yield api_pb2.DataChunk.FromString(chunk)

    async def TaskResult(self, req: api_pb2.TaskResultRequest, who: Principal) -> empty_pb2.Empty:
        task = _task(who)
        if req.result.status != api_pb2.GenericResult.GENERIC_STATUS_SUCCESS:
            self._containers.init_failed(task, bytes(req.result.SerializeToString()))
        return empty_pb2.Empty()
