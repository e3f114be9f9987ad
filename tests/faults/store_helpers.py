"""Helpers for the data dir and blob fault tests: a raw gRPC stub, signed blob URLs, plain HTTP requests."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Status
from modal_proto import api_grpc

from onshore.services.blobs import BlobService
from onshore.services.clock import FakeClock
from tests.conftest import ServerProcess


def metadata(server: ServerProcess) -> dict[str, str]:
    return {
        "x-modal-token-id": server.token["token_id"],
        "x-modal-token-secret": server.token["token_secret"],
    }


@contextlib.asynccontextmanager
async def stub_for(server: ServerProcess) -> AsyncIterator[api_grpc.ModalClientStub]:
    host, port = server.url.split("//", 1)[1].rsplit(":", 1)
    channel = Channel(host, int(port))
    try:
        yield api_grpc.ModalClientStub(channel)
    finally:
        channel.close()


async def status_of(
    server: ServerProcess, method: Any, request: Any, timeout: float = 15.0
) -> tuple[Status, str]:
    """(status, message) of one raw call, without the client's retries; OK when it answered."""
    try:
        await asyncio.wait_for(method(request, metadata=metadata(server)), timeout)
    except GRPCError as exc:
        return exc.status, exc.message or ""
    return Status.OK, ""


def http_url(server: ServerProcess) -> str:
    return str(json.loads((server.data_dir / "server.json").read_text())["http_url"])


def signer(server: ServerProcess, now: float) -> BlobService:
    """Signs blob URLs with the server's key, as of `now` (a BlobService over a scratch directory)."""
    key = (server.data_dir / "blob.key").read_bytes()
    scratch = server.data_dir.parent / f"{server.data_dir.name}-signer"
    return BlobService(scratch, key, http_url(server), FakeClock(now))


def request(method: str, url: str, body: bytes | None = None, timeout: float = 15.0) -> tuple[int, str]:
    """(status, body text) of one plain HTTP request."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, f"{parts.path}?{parts.query}", body=body)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def unshare_works() -> bool:
    """Whether this host lets the tests mount a tmpfs in a private mount namespace (root, unshare)."""
    try:
        probe = subprocess.run(
            ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def files_in(server: ServerProcess, directory: Path) -> list[str]:
    """The names in a directory as the server process sees it (through its mount namespace)."""
    assert server.proc is not None
    return sorted(p.name for p in Path(f"/proc/{server.proc.pid}/root{directory}").iterdir())
