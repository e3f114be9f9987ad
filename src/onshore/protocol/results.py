"""GenericResult messages the server itself produces (timeouts, crashes, cancellations)."""

from __future__ import annotations

from typing import Any, cast

from modal_proto import api_pb2


def make_result(status: int, message: str) -> bytes:
    result = api_pb2.GenericResult(status=cast(Any, status), exception=message, traceback=message)
    return bytes(result.SerializeToString())
