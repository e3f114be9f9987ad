"""Volume file contents over HTTP, by signed URL: block uploads (VolumeFS v2) and ranged downloads."""

from __future__ import annotations

import asyncio
import hashlib
import os

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from onshore.errors import InvalidArgument, NotFound, OnshoreError
from onshore.http.blobs import error_response
from onshore.services.blobs import BlobService, storage_error
from onshore.services.volume_objects import VolumeObjects, check_sha
from onshore.services.volumes import BLOCK_SIZE

_WRITE_BATCH = 1024 * 1024


def block_url(blobs: BlobService, sha: str) -> str:
    return f"{blobs.public_url}/volume-blocks/{sha}?{blobs.signed_query('put', 'block:' + sha)}"


def object_url(blobs: BlobService, sha: str, start: int, length: int) -> str:
    signed = blobs.signed_query("get", f"object:{sha}:{start}:{length}")
    return f"{blobs.public_url}/volume-objects/{sha}?start={start}&len={length}&{signed}"


def volume_routes(blobs: BlobService, objects: VolumeObjects) -> list[Route]:
    async def put_block(request: Request) -> Response:
        try:
            sha = check_sha(str(request.path_params["sha"]))
            params = request.query_params
            blobs.check_signed("put", "block:" + sha, params.get("sig", ""), params.get("exp", ""))
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > BLOCK_SIZE:
                raise InvalidArgument(f"A volume block is at most {BLOCK_SIZE} bytes")
            fd, tmp = objects.open_block()
            try:
                digest, size = hashlib.sha256(), 0

                def write(chunks: list[bytes]) -> None:
                    for chunk in chunks:
                        digest.update(chunk)
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]

                try:
                    # Hashed and written as it arrives, a MiB at a time off the event loop; never held whole.
                    pending: list[bytes] = []
                    held = 0
                    async for chunk in request.stream():
                        size += len(chunk)
                        if size > BLOCK_SIZE:
                            raise InvalidArgument(f"A volume block is at most {BLOCK_SIZE} bytes")
                        pending.append(chunk)
                        held += len(chunk)
                        if held >= _WRITE_BATCH:
                            await asyncio.to_thread(write, pending)
                            pending, held = [], 0
                    await asyncio.to_thread(write, pending)
                finally:
                    os.close(fd)
                objects.finish_block(sha, tmp, digest.hexdigest())
            finally:
                tmp.unlink(missing_ok=True)
        except OnshoreError as exc:
            return error_response(exc)
        except ClientDisconnect:
            return Response(status_code=400)
        except OSError as exc:
            return error_response(storage_error("store a volume block", objects.root / "blocks", exc))
        return Response(b"stored", status_code=200)

    async def get_object(request: Request) -> Response:
        try:
            sha = check_sha(str(request.path_params["sha"]))
            params = request.query_params
            start, length = params.get("start", ""), params.get("len", "")
            if not (start.isdigit() and length.isdigit()):
                raise InvalidArgument("A volume download URL needs start= and len=")
            name = f"object:{sha}:{start}:{length}"
            blobs.check_signed("get", name, params.get("sig", ""), params.get("exp", ""))
            try:
                size = objects.path(sha).stat().st_size
            except FileNotFoundError:
                raise NotFound(f"Volume file content {sha} is not stored") from None
        except OnshoreError as exc:
            return error_response(exc)
        begin = min(int(start), size)
        count = max(0, min(int(length), size - begin))
        return StreamingResponse(
            iter(objects.read(sha, begin, count)), headers={"Content-Length": str(count)}
        )

    return [
        Route("/volume-blocks/{sha}", put_block, methods=["PUT"]),
        Route("/volume-objects/{sha}", get_object, methods=["GET"]),
    ]
