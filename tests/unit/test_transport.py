"""The server's gRPC transport: what each connection keeps of the streams it has closed stays bounded."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2
from grpclib.client import Channel
from grpclib.protocol import H2Protocol
from modal_proto import api_grpc, api_pb2

from onshore.api.base import Principal, Router
from onshore.api.transport import CLOSED_STREAMS_KEPT, CoalescingServer


class _Hello:
    async def ClientHello(self, req: Any, who: Principal) -> Any:
        return api_pb2.ClientHelloResponse()


class _RecordingServer(CoalescingServer):
    """The server as Onshore runs it, remembering the protocol of each connection it accepts."""

    protocols: list[H2Protocol]

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        self.protocols.append(protocol)
        return protocol


async def test_a_long_lived_connection_remembers_a_bounded_number_of_closed_streams() -> None:
    router = Router([_Hello()], auth=lambda metadata, rpc: Principal("anonymous"))
    server = _RecordingServer([router])
    server.protocols = []
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    channel = Channel("127.0.0.1", port)
    try:
        stub = api_grpc.ModalClientStub(channel)
        calls = CLOSED_STREAMS_KEPT * 2 + 100
        for _ in range(calls):
            await stub.ClientHello(empty_pb2.Empty())
        (protocol,) = server.protocols
        closed = protocol.connection._connection._closed_streams
        # h2's own default keeps 65,536; the server's connections keep the last CLOSED_STREAMS_KEPT only.
        assert len(closed) == CLOSED_STREAMS_KEPT
    finally:
        channel.close()
        server.close()
        await server.wait_closed()
