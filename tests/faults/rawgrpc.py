"""Raw gRPC for fault tests: send chosen bytes as a request body and read back the status the server gives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import empty_pb2
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import StreamTerminatedError
from modal_proto import api_grpc

from tests.conftest import ServerProcess

SERVICE = "/modal.client.ModalClient/"


class BytesCodec(CodecBase):
    """Passes request bodies through as given and hands replies back undecoded."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        assert isinstance(message, bytes)
        return message

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


@dataclass
class Answer:
    status: Status
    message: str


def host_port(server: ServerProcess) -> tuple[str, int]:
    host, port = server.url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def raw_channel(server: ServerProcess) -> Channel:
    host, port = host_port(server)
    return Channel(host, port, codec=BytesCodec())


def rpc_specs() -> dict[str, tuple[Cardinality, Any]]:
    """Every RPC of the client's service: its cardinality and request message type."""
    stub = api_grpc.ModalClientStub(Channel("127.0.0.1", 1))  # never connects: used for its method table
    specs: dict[str, tuple[Cardinality, Any]] = {}
    for name in sorted(api_grpc.ModalClientBase.__abstractmethods__):
        method = getattr(stub, name)
        specs[name] = (method._cardinality, method.request_type)
    return specs


async def call_raw(
    channel: Channel,
    rpc: str,
    cardinality: Cardinality,
    body: bytes,
    metadata: dict[str, str],
    timeout: float = 3.0,
) -> Answer:
    """Send `body` as the request of `rpc`; its status and message (OK once every reply was read)."""
    try:
        async with channel.request(
            SERVICE + rpc, cardinality, bytes, bytes, timeout=timeout, metadata=metadata
        ) as stream:
            await stream.send_message(body, end=True)
            while await stream.recv_message() is not None:
                if cardinality == Cardinality.UNARY_UNARY:
                    break
    except GRPCError as exc:
        return Answer(exc.status, exc.message or "")
    except TimeoutError:
        return Answer(Status.DEADLINE_EXCEEDED, "client-side timeout")
    except StreamTerminatedError as exc:
        return Answer(Status.UNAVAILABLE, f"stream terminated: {exc}")
    return Answer(Status.OK, "")


UNIMPLEMENTED_PREFIX = "Onshore does not implement"


async def implemented_rpcs(channel: Channel, metadata: dict[str, str]) -> list[str]:
    """The RPCs the server implements: it names an unimplemented one in its answer, before reading a body."""
    found: list[str] = []
    for name, (cardinality, _type) in rpc_specs().items():
        answer = await call_raw(channel, name, cardinality, b"", metadata, timeout=3.0)
        if not (answer.status == Status.UNIMPLEMENTED and answer.message.startswith(UNIMPLEMENTED_PREFIX)):
            found.append(name)
    return found


async def hello(channel_or_server: Channel | ServerProcess, timeout: float = 5.0) -> Any:
    """ClientHello over a typed stub: proves the server still answers."""
    if isinstance(channel_or_server, ServerProcess):
        host, port = host_port(channel_or_server)
        channel = Channel(host, port)
        try:
            return await hello(channel, timeout)
        finally:
            channel.close()
    return await api_grpc.ModalClientStub(channel_or_server).ClientHello(empty_pb2.Empty(), timeout=timeout)
