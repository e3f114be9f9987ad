"""Blob upload and download over HTTP, as the client's S3-style blob code expects (ETag = md5)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from onshore.errors import OnshoreError, PermissionDenied
from onshore.services.blobs import BlobService

_PART_RE = re.compile(r"<PartNumber>(\d+)</PartNumber>")


def _error(exc: OnshoreError) -> Response:
    code = 403 if isinstance(exc, PermissionDenied) else 404 if "not found" in str(exc).lower() else 400
    return PlainTextResponse(str(exc), status_code=code)


async def _write(request: Request, path: str) -> str:
    md5 = hashlib.md5()
    tmp = f"{path}.{os.getpid()}.upload"
    with open(tmp, "wb") as f:
        async for chunk in request.stream():
            md5.update(chunk)
            f.write(chunk)
    os.replace(tmp, path)
    return md5.hexdigest()


def blob_app(blobs: BlobService) -> Starlette:
    async def receive(request: Request, part: int | None) -> Response:
        blob_id = request.path_params["blob_id"]
        try:
            blobs.check("put", blob_id, request.query_params.get("sig", ""))
        except OnshoreError as exc:
            return _error(exc)
        path = blobs.path(blob_id) if part is None else blobs.part_path(blob_id, part)
        digest = await _write(request, str(path))
        # The client checks the upload against this, as S3 returns it: the quoted md5 of the body.
        return Response(status_code=200, headers={"ETag": f'"{digest}"'})

    async def put_blob(request: Request) -> Response:
        return await receive(request, None)

    async def put_part(request: Request) -> Response:
        return await receive(request, int(request.path_params["part"]))

    async def complete(request: Request) -> Response:
        blob_id = request.path_params["blob_id"]
        try:
            blobs.check("put", blob_id, request.query_params.get("sig", ""))
            body = (await request.body()).decode(errors="replace")
            parts = [int(n) for n in _PART_RE.findall(body)]
            etag = blobs.assemble(blob_id, parts)
        except OnshoreError as exc:
            return _error(exc)
        xml = f'<CompleteMultipartUploadResult><ETag>"{etag}"</ETag></CompleteMultipartUploadResult>'
        return Response(xml, status_code=200, media_type="application/xml")

    async def get_blob(request: Request) -> Response:
        blob_id = request.path_params["blob_id"]
        try:
            blobs.check("get", blob_id, request.query_params.get("sig", ""))
        except OnshoreError as exc:
            return _error(exc)
        path = blobs.path(blob_id)
        if not path.exists():
            return PlainTextResponse(f"Blob {blob_id} not found", status_code=404)

        async def body() -> AsyncIterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(4 * 1024 * 1024):
                    yield chunk

        return StreamingResponse(body(), headers={"Content-Length": str(path.stat().st_size)})

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/healthz", health),
            Route("/blobs/{blob_id}", put_blob, methods=["PUT"]),
            Route("/blobs/{blob_id}", get_blob, methods=["GET"]),
            Route("/blobs/{blob_id}/parts/{part:int}", put_part, methods=["PUT"]),
            Route("/blobs/{blob_id}/complete", complete, methods=["POST", "PUT"]),
        ]
    )
