"""Blob upload and download over HTTP, as the client's S3-style blob code expects (ETag = md5)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from onshore.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    OnshoreError,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from onshore.services.blobs import MAX_BLOB_BYTES, PART_BYTES, BlobService, storage_error

log = logging.getLogger("onshore.http")

_PART_RE = re.compile(r"<PartNumber>(\d+)</PartNumber>")
_CODES: list[tuple[type[OnshoreError], int]] = [
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (InvalidArgument, 400),
    (ResourceExhausted, 507),  # Insufficient Storage: the server's disk is full
    (Unavailable, 503),
]


def error_response(exc: OnshoreError) -> Response:
    code = next((c for cls, c in _CODES if isinstance(exc, cls)), 400)
    if code >= 500:
        log.warning("blob request failed: %s", exc)
    return PlainTextResponse(str(exc), status_code=code)


async def _write(request: Request, fd: int, tmp: Path, limit: int) -> str:
    """Write the request body into fd (closing it); the body's md5. Storage errors name the path and cause."""
    md5 = hashlib.md5()
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise InvalidArgument(f"The upload is larger than {limit} bytes")
            md5.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
    except OSError as exc:
        raise storage_error("store the upload", tmp.parent, exc) from None
    finally:
        os.close(fd)
    return md5.hexdigest()


def blob_app(blobs: BlobService) -> Starlette:
    """The blob routes alone (the unix socket containers use)."""
    return Starlette(routes=blob_routes(blobs))


def blob_routes(blobs: BlobService) -> list[Route]:
    def check(request: Request, verb: str) -> str:
        blob_id = str(request.path_params["blob_id"])
        params = request.query_params
        blobs.check(verb, blob_id, params.get("sig", ""), params.get("exp", ""))
        return blob_id

    async def receive(request: Request, part: int | None) -> Response:
        try:
            blob_id = check(request, "put")
            fd, tmp = blobs.begin_upload(blob_id, part)
            try:
                digest = await _write(request, fd, tmp, MAX_BLOB_BYTES if part is None else PART_BYTES)
                # A retried upload is hashed against the blob it repeats: off the event loop.
                await asyncio.to_thread(blobs.finish_upload, blob_id, part, tmp, digest)
            finally:
                tmp.unlink(missing_ok=True)  # a failed write or a client that went away leaves nothing
        except OnshoreError as exc:
            return error_response(exc)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody reads it: the upload was abandoned (and removed)
        # The client checks the upload against this, as S3 returns it: the quoted md5 of the body.
        return Response(status_code=200, headers={"ETag": f'"{digest}"'})

    async def put_blob(request: Request) -> Response:
        return await receive(request, None)

    async def put_part(request: Request) -> Response:
        return await receive(request, int(request.path_params["part"]))

    async def complete(request: Request) -> Response:
        try:
            blob_id = check(request, "put")
            body = (await request.body()).decode(errors="replace")
            parts = [int(n) for n in _PART_RE.findall(body)]
            etag = await asyncio.to_thread(blobs.assemble, blob_id, parts)  # reads every part: off the loop
        except OnshoreError as exc:
            return error_response(exc)
        xml = f'<CompleteMultipartUploadResult><ETag>"{etag}"</ETag></CompleteMultipartUploadResult>'
        return Response(xml, status_code=200, media_type="application/xml")

    async def get_blob(request: Request) -> Response:
        try:
            blob_id = check(request, "get")
            f = blobs.open(blob_id)
        except OnshoreError as exc:
            return error_response(exc)
        size = os.fstat(f.fileno()).st_size

        async def body() -> AsyncIterator[bytes]:
            with f:
                while chunk := f.read(4 * 1024 * 1024):
                    yield chunk

        return StreamingResponse(body(), headers={"Content-Length": str(size)})

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return [
        Route("/healthz", health),
        Route("/blobs/{blob_id}", put_blob, methods=["PUT"]),
        Route("/blobs/{blob_id}", get_blob, methods=["GET"]),
        Route("/blobs/{blob_id}/parts/{part:int}", put_part, methods=["PUT"]),
        Route("/blobs/{blob_id}/complete", complete, methods=["POST", "PUT"]),
    ]
