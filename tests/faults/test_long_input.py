"""Very long strings and oversized bodies: refused at once with a short message, and nobody else waits."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import StreamTerminatedError
from h2.exceptions import StreamClosedError
from modal_proto import api_grpc, api_pb2

from onshore.api.base import MAX_REQUEST_BYTES
from tests.conftest import ServerProcess
from tests.faults.rawgrpc import (
    SERVICE,
    BytesCodec,
    call_raw,
    hello,
    host_port,
    raw_channel,
)

SIZES = [300_000, 5_000_000]  # characters: a long paste, and a multi-megabyte one
FAST = 2.0  # seconds a refusal may take, sending the request included
MAX_MESSAGE_CHARS = 1200

OVERSIZED = MAX_REQUEST_BYTES + 32 * 1024 * 1024  # a body past the server's limit


def _requests(text: str) -> list[tuple[str, Any]]:
    """Requests that carry `text` where the client puts a name, a tag, an id or a digest."""
    return [
        ("AppGetOrCreate", api_pb2.AppGetOrCreateRequest(app_name=text)),
        ("AppGetByDeploymentName", api_pb2.AppGetByDeploymentNameRequest(name=text)),
        ("FunctionGet", api_pb2.FunctionGetRequest(app_name="some-app", object_tag=text)),
        ("ClassGet", api_pb2.ClassGetRequest(app_name=text, object_tag="Cls")),
        ("SecretGetOrCreate", api_pb2.SecretGetOrCreateRequest(deployment_name=text)),
        ("EnvironmentGetOrCreate", api_pb2.EnvironmentGetOrCreateRequest(deployment_name=text)),
        ("AppList", api_pb2.AppListRequest(environment_name=text)),
        ("FunctionMap", api_pb2.FunctionMapRequest(function_id=text)),
        ("AppGetLogs", api_pb2.AppGetLogsRequest(app_id="ap-" + "A" * 22, last_entry_id=text)),
        # Not a name: a digest the mount service quotes when it refuses it.
        ("MountBatchedCheckExistence", api_pb2.MountBatchedCheckExistenceRequest(sha256_hex_hashes=[text])),
    ]


async def _watch_hellos(server: ServerProcess, stop: asyncio.Event, latencies: list[float]) -> None:
    """ClientHello on a connection of its own, again and again, noting how long each took."""
    host, port = host_port(server)
    channel = Channel(host, port)
    try:
        while not stop.is_set():
            started = time.monotonic()
            await hello(channel, timeout=30)
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.02)
    finally:
        channel.close()


async def _while_watching(server: ServerProcess, work: Callable[[], Awaitable[None]]) -> list[float]:
    stop = asyncio.Event()
    latencies: list[float] = []
    watcher = asyncio.create_task(_watch_hellos(server, stop, latencies))
    try:
        await work()
    finally:
        await asyncio.sleep(0.1)
        stop.set()
        await watcher
    return latencies


async def test_a_very_long_string_is_refused_fast_with_a_short_message(fault_server: ServerProcess) -> None:
    metadata = fault_server.token_metadata
    host, port = host_port(fault_server)
    channel = Channel(host, port)
    stub = api_grpc.ModalClientStub(channel)
    outcomes: list[tuple[str, int, Status, int, float]] = []

    async def send_all() -> None:
        for size in SIZES:
            for rpc, request in _requests("n" * size):
                started = time.monotonic()
                try:
                    await getattr(stub, rpc)(request, metadata=metadata, timeout=30)
                    status, message = Status.OK, ""
                except GRPCError as exc:
                    status, message = exc.status, exc.message or ""
                except StreamTerminatedError as exc:  # e.g. a reply header too long for the client
                    status, message = Status.UNAVAILABLE, str(exc)
                outcomes.append((rpc, size, status, len(message), time.monotonic() - started))

    try:
        latencies = await _while_watching(fault_server, send_all)
    finally:
        channel.close()
    wrong = [o for o in outcomes if o[2] != Status.INVALID_ARGUMENT]
    assert not wrong, f"long strings not refused as INVALID_ARGUMENT: {wrong}"
    long_messages = [o for o in outcomes if o[3] > MAX_MESSAGE_CHARS]
    assert not long_messages, f"refusals whose message echoes the long string: {long_messages}"
    slow = [o for o in outcomes if o[4] > FAST]
    assert not slow, f"refusals slower than {FAST}s: {slow}"
    assert latencies, "no ClientHello completed while the long requests were refused"
    assert max(latencies) < 1.0, f"ClientHello on another connection stalled {max(latencies):.2f}s"


async def _send_prefix_only(
    server: ServerProcess, claimed: int, body: bytes, end: bool
) -> tuple[Status, str]:
    """A request whose length prefix claims `claimed` bytes, followed by `body` only."""
    host, port = host_port(server)
    channel = Channel(host, port, codec=BytesCodec())
    try:
        async with channel.request(
            SERVICE + "MountPutFile",
            Cardinality.UNARY_UNARY,
            bytes,
            bytes,
            timeout=10,
            metadata=server.token_metadata,
        ) as stream:
            await stream.send_request()
            # The gRPC framing by hand: grpclib's own send_message always tells the truth about the length.
            # (A server that refuses early may reset the stream while the client still sends: fine.)
            with contextlib.suppress(StreamClosedError):
                await stream._stream.send_data(struct.pack(">?I", False, claimed) + body, end_stream=end)
            await stream.recv_message()  # a refusal resets the stream: its status comes with the exit
    except GRPCError as exc:
        return exc.status, exc.message or ""
    finally:
        channel.close()
    return Status.OK, ""


def _peak_rss_kib(server: ServerProcess) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/<pid>/status")


async def test_an_oversized_body_is_refused_from_its_length_prefix(fault_server: ServerProcess) -> None:
    # The prefix claims more than the limit and only 1 KiB follows, the stream left open: a server that read
    # the body before looking at its size would wait for the rest until the client gave up.
    started = time.monotonic()
    status, message = await _send_prefix_only(fault_server, OVERSIZED, b"\x00" * 1024, end=False)
    elapsed = time.monotonic() - started
    assert status == Status.RESOURCE_EXHAUSTED, (status, message)
    assert "limit" in message and "blob" in message, message
    assert elapsed < FAST, f"the refusal took {elapsed:.1f}s"

    # A message that ends before its prefix said it would is the client's mistake.
    status, message = await _send_prefix_only(fault_server, 100, b"\x0a\x02ab", end=True)
    assert status == Status.INVALID_ARGUMENT, (status, message)
    assert "ended before" in message, message

    # A real request over the limit (encoded beforehand: this test's own loop must not stall the watcher):
    # refused quickly, with the server's memory nowhere near the body's size.
    body = api_pb2.MountPutFileRequest(sha256_hex="0" * 64, data=b"x" * OVERSIZED).SerializeToString()
    peak_before = _peak_rss_kib(fault_server)
    metadata = fault_server.token_metadata
    channel = raw_channel(fault_server)
    outcome: dict[str, Any] = {}

    async def send_big() -> None:
        started = time.monotonic()
        answer = await call_raw(channel, "MountPutFile", Cardinality.UNARY_UNARY, body, metadata, timeout=30)
        outcome.update(status=answer.status, message=answer.message, seconds=time.monotonic() - started)

    try:
        latencies = await _while_watching(fault_server, send_big)
    finally:
        channel.close()
    assert outcome["status"] == Status.RESOURCE_EXHAUSTED, outcome
    assert outcome["seconds"] < FAST, outcome
    grown_mib = (_peak_rss_kib(fault_server) - peak_before) / 1024
    print(
        f"a refused {len(body) >> 20} MiB request: {outcome['seconds']:.2f}s; "
        f"the server's peak memory: +{grown_mib:.0f} MiB"
    )
    assert grown_mib < 48, f"the server's peak memory grew {grown_mib:.0f} MiB for a refused request"
    assert max(latencies) < 1.0, f"ClientHello on another connection stalled {max(latencies):.2f}s"
    await hello(fault_server)
