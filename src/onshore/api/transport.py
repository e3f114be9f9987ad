"""A grpclib server whose connections coalesce the writes of one event-loop turn into one socket send.

grpclib writes a response's headers, message and trailers to the socket separately; on the warm call path
that is three system calls per RPC. Buffering the writes made during one turn of the loop and sending them
together at its end keeps the bytes and their order the same, with one send instead of several.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from grpclib.protocol import H2Protocol
from grpclib.server import Server


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


class _CoalescingProtocol(H2Protocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(cast(asyncio.BaseTransport, _CoalescingTransport(transport)))


class CoalescingServer(Server):
    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        protocol.__class__ = _CoalescingProtocol
        return protocol
