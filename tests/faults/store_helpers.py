"""Helpers for the data dir and blob fault tests: signed blob URLs, plain HTTP requests, unshare, listings."""

from __future__ import annotations

import http.client
import json
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from onshore.services.blobs import BlobService
from onshore.services.clock import FakeClock
from tests.conftest import ServerProcess


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
