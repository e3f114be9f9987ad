"""gRPC handlers for mounts: file uploads by content hash and mount creation."""

from __future__ import annotations

import asyncio

from modal_proto import api_pb2

from onshore.api.base import Principal
from onshore.errors import InvalidArgument, Unimplemented
from onshore.models import MountFile
from onshore.services.blobs import BlobService, parse_blob_id
from onshore.services.mounts import CLIENT_MOUNT_PREFIX, MAX_INLINE_FILE_BYTES, MountService
from onshore.services.standalone import StandalonePythons, is_standalone_name, process_runtime_refusal


class MountHandlers:
    def __init__(
        self, mounts: MountService, blobs: BlobService, standalone: StandalonePythons | None = None
    ) -> None:
        """standalone: provides python-build-standalone mounts (add_python=); None where the runtime has
        no use for them (the process runtime), which then refuses them by name."""
        self._mounts = mounts
        self._blobs = blobs
        self._standalone = standalone

    async def MountBatchedCheckExistence(
        self, req: api_pb2.MountBatchedCheckExistenceRequest, who: Principal
    ) -> api_pb2.MountBatchedCheckExistenceResponse:
        missing = self._mounts.missing(list(req.sha256_hex_hashes))
        return api_pb2.MountBatchedCheckExistenceResponse(missing_sha256_hex_hashes=missing)

    async def MountPutFile(
        self, req: api_pb2.MountPutFileRequest, who: Principal
    ) -> api_pb2.MountPutFileResponse:
        which = req.WhichOneof("data_oneof")
        if which == "data_blob_id":
            blob_id = parse_blob_id(req.data_blob_id)
            self._mounts.missing([req.sha256_hex])  # checks the hash before the blob is opened
            # The blob's file is checked (NotFound; Conflict for a link or a FIFO) as it is read.
            await asyncio.to_thread(
                self._mounts.put_file_linked, req.sha256_hex, self._blobs.path(blob_id), f"Blob {blob_id}"
            )
            self._blobs.delete(blob_id)  # its content now lives in the file store
        elif which == "data":
            if len(req.data) > MAX_INLINE_FILE_BYTES:
                raise InvalidArgument("Files over 64 MiB must be uploaded as blobs")
            self._mounts.put_file(req.sha256_hex, bytes(req.data))
        else:
            # An existence probe: the client asks whether the file is already stored.
            return api_pb2.MountPutFileResponse(exists=not self._mounts.missing([req.sha256_hex]))
        return api_pb2.MountPutFileResponse(exists=True)

    async def MountGetOrCreate(
        self, req: api_pb2.MountGetOrCreateRequest, who: Principal
    ) -> api_pb2.MountGetOrCreateResponse:
        if req.deployment_name.startswith(CLIENT_MOUNT_PREFIX) and not req.files:
            mount = self._mounts.client_mount(req.deployment_name)
        elif is_standalone_name(req.deployment_name) and not req.files:
            if self._standalone is None:
                raise Unimplemented(process_runtime_refusal(req.deployment_name))
            mount = await self._standalone.mount(req.deployment_name, req.namespace)
        elif req.deployment_name and not req.files:
            raise InvalidArgument(f"Mount '{req.deployment_name}' not found; named mounts are not supported")
        else:
            if req.app_id:
                who.require_app(req.app_id)
            files = [MountFile(f.filename, f.sha256_hex, f.mode or 0o644) for f in req.files]
            mount = self._mounts.create(files, req.app_id, req.deployment_name, req.namespace)
        resp = api_pb2.MountGetOrCreateResponse(mount_id=mount.mount_id)
        resp.handle_metadata.content_checksum_sha256_hex = self._mounts.checksum(mount)
        return resp
