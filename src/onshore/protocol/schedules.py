"""Schedules on the wire: a definition's Schedule message as a ScheduleSpec, and a scheduled run's call."""

from __future__ import annotations

from typing import Any

from modal._serialization import serialize
from modal_proto import api_pb2

from onshore.models import ScheduleSpec
from onshore.services.call_state import INVOCATION_ASYNC
from onshore.services.functions import FunctionService
from onshore.services.invoke import InvokeService


def schedule_from_definition(fn: Any) -> ScheduleSpec | None:
    """The schedule of an api_pb2.Function (None without one); validated later, by the schedule service."""
    if not fn.HasField("schedule"):
        return None
    schedule = fn.schedule
    kind = schedule.WhichOneof("schedule_oneof")
    if kind == "cron":
        return ScheduleSpec(kind="cron", cron=schedule.cron.cron_string, timezone=schedule.cron.timezone)
    if kind == "period":
        p = schedule.period
        return ScheduleSpec(
            years=int(p.years),
            months=int(p.months),
            weeks=int(p.weeks),
            days=int(p.days),
            hours=int(p.hours),
            minutes=int(p.minutes),
            seconds=float(p.seconds),
        )
    return ScheduleSpec()  # a Schedule with neither: an all-zero period, refused as one


def empty_input() -> bytes:
    """A FunctionInput that calls a function with no arguments, as the client encodes `f.spawn()`."""
    message = api_pb2.FunctionInput(args=serialize(((), {})), data_format=api_pb2.DATA_FORMAT_PICKLE)
    return bytes(message.SerializeToString())


class ScheduledRunner:
    """Starts a scheduled function's run: a spawned call with no arguments, its output kept like a spawn's."""

    def __init__(self, functions: FunctionService, invoke: InvokeService) -> None:
        self._functions = functions
        self._invoke = invoke
        self._input = empty_input()

    def start(self, function_id: str) -> str:
        """The new call's id; Conflict or NotFound where the function cannot run now."""
        fn = self._functions.get(function_id)
        self._invoke.check_runnable(fn)
        call, _ = self._invoke.start(
            fn, api_pb2.FUNCTION_CALL_TYPE_UNARY, INVOCATION_ASYNC, [(0, self._input)]
        )
        return call.function_call_id
