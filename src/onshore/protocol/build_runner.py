"""Image.run_function: run the function once in a container whose filesystem writes become the image layer."""

from __future__ import annotations

import asyncio
import logging

from modal_proto import api_pb2

from onshore.images.model import BuildFailed, CommitFn, LogFn
from onshore.models import FunctionSpec, OutputRecord
from onshore.protocol.results import generic_result
from onshore.protocol.schedules import empty_input
from onshore.scheduling.placement import Allocation, request_of
from onshore.services.call_state import INVOCATION_SYNC
from onshore.services.containers import ContainerService, describe_exit
from onshore.services.functions import FunctionService
from onshore.services.invoke import InvokeService

log = logging.getLogger("onshore.images.run_function")

PLACE_POLL_S = 0.5  # how often a build waiting for its GPUs (or CPU, memory) looks again


def _input(payload: bytes) -> bytes:
    """The build function's input: the client's (its args and kwargs), or a call with no arguments."""
    return payload or empty_input()


def _succeeded(output: OutputRecord) -> bool:
    result = generic_result(output.result)
    return bool(result.status == api_pb2.GenericResult.GENERIC_STATUS_SUCCESS)


class BuildFunctionRunner:
    def __init__(
        self, functions: FunctionService, invoke: InvokeService, containers: ContainerService
    ) -> None:
        self._functions = functions
        self._invoke = invoke
        self._containers = containers

    async def _place(self, spec: FunctionSpec, log_line: LogFn) -> Allocation:
        """What the build container reserves (its GPUs too), once the machine has it free."""
        ledger, request = self._containers.ledger, request_of(spec)
        why = ledger.never(request)
        if why:
            raise BuildFailed(f"Image.run_function({spec.tag}) cannot run on this server: {why}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + spec.timeout_secs
        allocation = ledger.fit(request)
        if allocation is None:
            log_line(f"waiting for {request.describe()} to come free for {spec.tag}\n")
        while allocation is None:
            if loop.time() > deadline:
                raise BuildFailed(
                    f"Image.run_function({spec.tag}): {request.describe()} did not come free within "
                    f"{spec.timeout_secs} s"
                )
            await asyncio.sleep(PLACE_POLL_S)
            allocation = ledger.fit(request)
        return allocation

    async def run(
        self,
        function_id: str,
        payload: bytes,
        log_line: LogFn,
        *,
        target: object,
        commit: CommitFn | None = None,
    ) -> None:
        """Run the function in a build container that its runtime sets up as `target` says, and await
        `commit` once the function succeeded (see FunctionRunner); BuildFailed says why it did not work."""
        fn = self._functions.get(function_id)
        spec = self._functions.definition_of(fn).spec
        allocation = await self._place(spec, log_line)
        self._functions.mark_image_builder(function_id)  # no other container may take its input
        call, _ = self._invoke.start(
            fn, api_pb2.FUNCTION_CALL_TYPE_UNARY, INVOCATION_SYNC, [(0, _input(payload))]
        )
        task = self._containers.reserve(function_id, fn.app_id, allocation)
        task.image_build = target
        log_line(f"running {spec.tag} in container {task.task_id}\n")
        try:
            await self._containers.launch(task)
        except Exception as exc:
            raise BuildFailed(
                f"Image.run_function({spec.tag}): its container could not start: {exc}"
            ) from None

        def container_alive() -> None:
            if task.exit_code is not None:  # it ended before it could take its input
                raise BuildFailed(
                    f"Image.run_function({spec.tag}): its container {describe_exit(task.exit_code)} before "
                    f"running the function (its output: `modal container logs {task.task_id}`)"
                )

        output: OutputRecord | None = None
        try:
            output = await self._invoke.first_output(call, float(spec.timeout_secs), container_alive)
            if output is not None and commit is not None and _succeeded(output):
                log_line(f"{spec.tag} returned; committing the files of container {task.task_id}\n")
                await commit(task.task_id)
        finally:
            # Its container ends before the layer is used: every write it made is in `upper` (or committed).
            await self._containers.stop(task.task_id, "its image build function finished", grace=5.0)
        if output is None:
            raise BuildFailed(
                f"Image.run_function({spec.tag}) did not finish within its timeout of {spec.timeout_secs} s"
            )
        result = generic_result(output.result)
        if not _succeeded(output):
            detail = result.traceback or result.exception or "no detail"
            raise BuildFailed(f"Image.run_function({spec.tag}) failed: {result.exception}\n{detail}".rstrip())
        log_line(f"{spec.tag} finished; its files form the new layer\n")
