"""Blob ids against a real server: no path outside the blob store, only regular files, write-once blobs."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from grpclib.const import Status
from modal_proto import api_pb2

from onshore import ids
from tests.conftest import ServerProcess, raw_status, raw_stub, wait_for
from tests.faults.store_helpers import http_url, request, signer

_HOST_FILE = Path("/etc/hostname")
HOSTNAME_SHA = hashlib.sha256(_HOST_FILE.read_bytes() if _HOST_FILE.exists() else b"").hexdigest()
TRAVERSALS = [
    "../../../../etc/hostname",
    "/etc/hostname",
    "bl-../../../../etc/hostname",
    "bl-AAAAAAAAAAAAAAAAAAAAAA/../../../../etc/hostname",
]


async def _served(server: ServerProcess) -> None:
    """The server still answers."""
    async with raw_stub(server) as stub:
        status, _ = await raw_status(server, stub.AppList, api_pb2.AppListRequest(), timeout=5)
    assert status == Status.OK


@pytest.mark.parametrize("blob_id", TRAVERSALS)
async def test_a_blob_id_naming_a_host_path_is_invalid_argument(server: ServerProcess, blob_id: str) -> None:
    async with raw_stub(server) as stub:
        put = api_pb2.MountPutFileRequest(sha256_hex=HOSTNAME_SHA, data_blob_id=blob_id)
        status, message = await raw_status(server, stub.MountPutFile, put)
        assert status == Status.INVALID_ARGUMENT, message
        assert "blob id" in message
        status, message = await raw_status(server, stub.BlobGet, api_pb2.BlobGetRequest(blob_id=blob_id))
        assert status == Status.INVALID_ARGUMENT and "blob id" in message
        # Nothing of the host file reached the file store.
        check = api_pb2.MountBatchedCheckExistenceRequest(sha256_hex_hashes=[HOSTNAME_SHA])
        resp = await stub.MountBatchedCheckExistence(check, metadata=server.token_metadata)
        assert list(resp.missing_sha256_hex_hashes) == [HOSTNAME_SHA]


async def test_a_symlink_or_fifo_in_the_blob_store_is_refused_and_the_server_keeps_serving(
    server: ServerProcess,
) -> None:
    blobs_dir = server.data_dir / "blobs"
    link_id, fifo_id = ids.new_id("blob"), ids.new_id("blob")
    os.symlink("/etc/hostname", blobs_dir / link_id)
    os.mkfifo(blobs_dir / fifo_id)
    try:
        async with raw_stub(server) as stub:
            for blob_id, why in ((link_id, "symbolic link"), (fifo_id, "not a regular file")):
                started = time.monotonic()
                put = api_pb2.MountPutFileRequest(sha256_hex=HOSTNAME_SHA, data_blob_id=blob_id)
                status, message = await raw_status(server, stub.MountPutFile, put, timeout=5)
                assert status == Status.FAILED_PRECONDITION, message
                assert why in message and blob_id in message
                assert time.monotonic() - started < 3
                status, message = await raw_status(
                    server, stub.BlobGet, api_pb2.BlobGetRequest(blob_id=blob_id)
                )
                assert status == Status.NOT_FOUND, message
        # Even with a valid signature, the HTTP side does not follow the link nor wait on the FIFO.
        sign = signer(server, time.time())
        for blob_id in (link_id, fifo_id):
            code, text = request("GET", sign.url("get", blob_id), timeout=5)
            assert code == 409, text
        await _served(server)
    finally:
        (blobs_dir / link_id).unlink()
        (blobs_dir / fifo_id).unlink()


async def _upload(server: ServerProcess, data: bytes) -> tuple[str, str]:
    async with raw_stub(server) as stub:
        resp = await stub.BlobCreate(
            api_pb2.BlobCreateRequest(content_length=len(data)), metadata=server.token_metadata
        )
    url = resp.upload_urls.items[0]
    code, text = request("PUT", url, data)
    assert code == 200, text
    return resp.blob_id, url


async def test_a_complete_blob_cannot_be_overwritten(server: ServerProcess) -> None:
    blob_id, put_url = await _upload(server, b"the original")
    async with raw_stub(server) as stub:
        get = await stub.BlobGet(api_pb2.BlobGetRequest(blob_id=blob_id), metadata=server.token_metadata)
    assert request("GET", get.download_url) == (200, "the original")
    code, text = request("PUT", put_url, b"something else")
    assert code == 409 and "cannot be changed once uploaded" in text
    assert request("PUT", put_url, b"the original")[0] == 200  # a client's retry of the same upload
    assert request("GET", get.download_url) == (200, "the original")
    assert not [n for n in os.listdir(server.data_dir / "blobs") if n.startswith(f".{blob_id}")]


async def test_an_expired_or_altered_url_is_refused(server: ServerProcess) -> None:
    blob_id, _ = await _upload(server, b"payload")
    stale = signer(server, time.time() - 2 * 3600).url("get", blob_id)
    code, text = request("GET", stale)
    assert code == 403 and "expired at" in text and "ask the server for a new one" in text
    fresh = signer(server, time.time()).url("get", blob_id)
    assert request("GET", fresh) == (200, "payload")
    extended = fresh.replace("exp=", "exp=9")
    code, text = request("GET", extended)
    assert code == 403 and "signature" in text
    stale_put = signer(server, time.time() - 25 * 3600).url("put", ids.new_id("blob"))
    code, text = request("PUT", stale_put, b"late")
    assert code == 403 and "upload URLs last 24h" in text


async def test_a_malformed_id_in_a_blob_url_is_a_bad_request(server: ServerProcess) -> None:
    base = http_url(server)
    code, text = request("GET", f"{base}/blobs/bl-..%2F..%2Fetc?exp=1&sig=x")
    assert code in (400, 404), text
    code, text = request("GET", f"{base}/blobs/bl-AAAA?exp=1&sig=x")
    assert code == 400 and "Not a blob id" in text


async def test_an_upload_the_client_abandons_leaves_no_partial_file(server: ServerProcess) -> None:
    async with raw_stub(server) as stub:
        resp = await stub.BlobCreate(
            api_pb2.BlobCreateRequest(content_length=10 << 20), metadata=server.token_metadata
        )
    url = urlsplit(resp.upload_urls.items[0])
    assert url.hostname is not None and url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        head = f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\nContent-Length: {10 << 20}\r\n\r\n"
        sock.sendall(head.encode() + b"x" * (1 << 20))

        def partial() -> list[str]:
            return [n for n in os.listdir(server.data_dir / "blobs") if n.startswith(f".{resp.blob_id}")]

        assert wait_for(partial, 10, 0.05), "the upload never started"
    assert wait_for(lambda: not partial(), 10, 0.05), f"a partial upload was left behind: {partial()}"
    assert not (server.data_dir / "blobs" / resp.blob_id).exists()
    await _served(server)


async def test_a_mount_file_uploaded_as_a_blob_is_stored_once_its_hash_matches(server: ServerProcess) -> None:
    data = os.urandom(5 << 20)  # over the client's 4 MiB limit for files sent inline
    sha = hashlib.sha256(data).hexdigest()
    blob_id, _ = await _upload(server, data)
    async with raw_stub(server) as stub:
        wrong = api_pb2.MountPutFileRequest(sha256_hex=hashlib.sha256(b"x").hexdigest(), data_blob_id=blob_id)
        status, message = await raw_status(server, stub.MountPutFile, wrong)
        assert status == Status.INVALID_ARGUMENT and "does not match" in message
        put = api_pb2.MountPutFileRequest(sha256_hex=sha, data_blob_id=blob_id)
        assert (await stub.MountPutFile(put, metadata=server.token_metadata)).exists
        check = api_pb2.MountBatchedCheckExistenceRequest(sha256_hex_hashes=[sha])
        resp = await stub.MountBatchedCheckExistence(check, metadata=server.token_metadata)
        assert list(resp.missing_sha256_hex_hashes) == []
    assert (server.data_dir / "files" / sha[:2] / sha).read_bytes() == data
    assert not (server.data_dir / "blobs" / blob_id).exists()  # its content moved to the file store
    assert not [n for n in os.listdir(server.data_dir / "files" / sha[:2]) if n.endswith(".upload")]
