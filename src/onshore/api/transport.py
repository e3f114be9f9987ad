"""The grpclib transport: a server that coalesces each loop turn's writes, and a bounded request reader.

grpclib writes a response's headers, message and trailers to the socket separately; on the warm call path
that is three system calls per RPC. Buffering the writes made during one turn of the loop and sending them
together at its end keeps the bytes and their order the same, with one send instead of several.

grpclib's Stream.recv_message reads a whole message, however long its length prefix says it is, and lets
a decoding error escape as a bug; receive_request reads the 5-byte prefix first and refuses an oversized
message before its body is read (HTTP/2 flow control keeps the rest with the client), and reports a body
that does not decode as the caller's mistake.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any, cast

from google.protobuf.message import DecodeError
from grpclib.protocol import H2Protocol
from grpclib.server import Server
from grpclib.server import Stream as ServerStream
from h2.utilities import SizeLimitDict

from onshore import errors

_PREFIX = struct.Struct(">?I")  # gRPC message framing: a compressed flag and a big-endian length


async def receive_request(stream: ServerStream[Any, Any], name: str, limit: int) -> Any:
    """The request message of a unary-request RPC, or None when the client sent none.

    Raises ResourceExhausted for a message over `limit` bytes (its body unread) and InvalidArgument for a
    message that is compressed, cut short or not a valid encoding of the RPC's request type.
    """
    h2_stream = stream._stream
    try:
        prefix = await h2_stream.recv_data(_PREFIX.size)
        if not prefix:
            return None
        compressed, size = _PREFIX.unpack(prefix)
        if compressed:
            raise errors.InvalidArgument(f"{name}: compressed messages are not supported")
        if size > limit:
            raise errors.ResourceExhausted(
                f"{name}: request of {size} bytes exceeds the {limit} byte limit; "
                "large payloads travel as blobs"
            )
        body = await h2_stream.recv_data(size)
    except AssertionError:
        # grpclib's buffer asserts when the stream ends before the bytes the prefix announced.
        raise errors.InvalidArgument(f"{name}: the request ended before its message did") from None
    try:
        message = stream._codec.decode(body, stream._recv_type)
    except DecodeError as exc:
        what = getattr(stream._recv_type, "__name__", "request message")
        raise errors.InvalidArgument(f"{name}: the request is not a valid {what} ({exc})") from None
    # What Stream.recv_message does once it holds a message: the server's event hook and its counters.
    (message,) = await stream._dispatch.recv_message(message)
    stream._messages_received += 1
    connection = h2_stream.connection
    connection.messages_received += 1
    connection.last_message_received = time.monotonic()
    return message


class _CoalescingTransport:
    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._buffer: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._buffer:
            self._loop.call_soon(self.flush)
        self._buffer.append(data)

    def flush(self) -> None:
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


# How many closed streams each connection remembers. h2 keeps the id and closer of the last 65,536 closed
# streams of a connection, to answer late frames on them precisely; a container's connection closes two
# streams per input it runs, so each long-lived connection grew by about 1.3 MiB per 10,000 inputs until
# that cap. Late frames come within a few streams of the close: a thousand is plenty.
CLOSED_STREAMS_KEPT = 1024


class _CoalescingProtocol(H2Protocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(cast(asyncio.BaseTransport, _CoalescingTransport(transport)))
        h2_connection = self.connection._connection  # grpclib's Connection wraps h2's H2Connection
        h2_connection._closed_streams = SizeLimitDict(size_limit=CLOSED_STREAMS_KEPT)


class CoalescingServer(Server):
    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        protocol.__class__ = _CoalescingProtocol
        return protocol
