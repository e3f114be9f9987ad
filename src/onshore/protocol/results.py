"""GenericResult messages the server itself produces (timeouts, crashes, cancellations)."""

from __future__ import annotations

from typing import Any, cast

from modal_proto import api_pb2

from onshore.models import Payload


def generic_result(payload: Payload) -> api_pb2.GenericResult:
    """The GenericResult a payload holds (decoded only when it is stored as bytes)."""
    if isinstance(payload, bytes):
        return api_pb2.GenericResult.FromString(payload)
    return cast(api_pb2.GenericResult, payload)


def make_result(status: int, message: str) -> bytes:
    result = api_pb2.GenericResult(status=cast(Any, status), exception=message, traceback=message)
    return bytes(result.SerializeToString())
