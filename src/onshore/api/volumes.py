"""gRPC handlers for Volumes: identities, file uploads and downloads (v1 and v2), listings, removes, copies,
and commits and reloads from inside containers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from google.protobuf import empty_pb2
from modal_proto import api_pb2

from onshore.api.base import Principal
from onshore.errors import Conflict, InvalidArgument
from onshore.http.volume_blocks import block_url, object_url
from onshore.models import KvObject, VolumeEntry
from onshore.services.blobs import BlobService
from onshore.services.mounts import MountService
from onshore.services.volume_mounts import VolumeMounts
from onshore.services.volume_objects import check_sha
from onshore.services.volumes import BLOCK_SIZE, VolumeService, file_key

_KINDS = {
    "file": api_pb2.FileEntry.FileType.FILE,
    "dir": api_pb2.FileEntry.FileType.DIRECTORY,
    "symlink": api_pb2.FileEntry.FileType.SYMLINK,
}
_LIST_BATCH = 1000


def _metadata(obj: KvObject) -> api_pb2.VolumeMetadata:
    return api_pb2.VolumeMetadata(
        name=obj.name,
        version=obj.fs_version,  # type: ignore[arg-type]
        creation_info=api_pb2.CreationInfo(created_at=obj.created_at, created_by="onshore"),
    )


def _file_entry(entry: VolumeEntry) -> api_pb2.FileEntry:
    return api_pb2.FileEntry(
        path=entry.path, type=_KINDS[entry.kind], mtime=int(entry.mtime), size=entry.size
    )


def _range(entry: VolumeEntry, start: int, length: int) -> tuple[int, int]:
    """The bytes [start, end) of a file a read asks for (length 0: to its end), within the file."""
    begin = min(start, entry.size)
    return begin, entry.size if not length else min(entry.size, begin + length)


class VolumeHandlers:
    def __init__(
        self, volumes: VolumeService, mounts: VolumeMounts, files: MountService, blobs: BlobService
    ) -> None:
        self._volumes = volumes
        self._mounts = mounts
        self._files = files
        self._blobs = blobs

    # ---------------------------------------------------------------- identities
    async def VolumeGetOrCreate(
        self, req: api_pb2.VolumeGetOrCreateRequest, who: Principal
    ) -> api_pb2.VolumeGetOrCreateResponse:
        obj = self._volumes.get_or_create(
            req.deployment_name, req.environment_name, req.object_creation_type, req.version
        )
        return api_pb2.VolumeGetOrCreateResponse(
            volume_id=obj.object_id,
            version=obj.fs_version,  # type: ignore[arg-type]
            metadata=_metadata(obj),
        )

    async def VolumeGetById(
        self, req: api_pb2.VolumeGetByIdRequest, who: Principal
    ) -> api_pb2.VolumeGetByIdResponse:
        obj = self._volumes.get(req.volume_id)
        return api_pb2.VolumeGetByIdResponse(volume_id=obj.object_id, metadata=_metadata(obj))

    async def VolumeHeartbeat(self, req: api_pb2.VolumeHeartbeatRequest, who: Principal) -> empty_pb2.Empty:
        self._volumes.heartbeat(req.volume_id)
        return empty_pb2.Empty()

    async def VolumeList(self, req: api_pb2.VolumeListRequest, who: Principal) -> api_pb2.VolumeListResponse:
        env = req.environment_name or "main"
        objects = self._volumes.list_named(env)
        if req.pagination.created_before:
            objects = [o for o in objects if o.created_at < req.pagination.created_before]
        objects.sort(key=lambda o: -o.created_at)
        if req.pagination.max_objects > 0:
            objects = objects[: req.pagination.max_objects]
        resp = api_pb2.VolumeListResponse(environment_name=env)
        for obj in objects:
            resp.items.add(
                label=obj.name, volume_id=obj.object_id, created_at=obj.created_at, metadata=_metadata(obj)
            )
        return resp

    async def VolumeDelete(self, req: api_pb2.VolumeDeleteRequest, who: Principal) -> empty_pb2.Empty:
        self._volumes.delete(req.volume_id)
        return empty_pb2.Empty()

    async def VolumeRename(self, req: api_pb2.VolumeRenameRequest, who: Principal) -> empty_pb2.Empty:
        self._volumes.rename(req.volume_id, req.name)
        return empty_pb2.Empty()

    # ---------------------------------------------------------------- in containers
    async def VolumeCommit(
        self, req: api_pb2.VolumeCommitRequest, who: Principal
    ) -> api_pb2.VolumeCommitResponse:
        task = who.task
        if task is None:
            raise Conflict("Volume.commit() works only inside a container that mounts the volume")
        await self._mounts.commit(task.task_id, req.volume_id)
        return api_pb2.VolumeCommitResponse(skip_reload=True)  # the commit showed the container the latest

    async def VolumeReload(self, req: api_pb2.VolumeReloadRequest, who: Principal) -> empty_pb2.Empty:
        task = who.task
        if task is None:
            raise Conflict("Volume.reload() works only inside a container that mounts the volume")
        await self._mounts.reload(task.task_id, req.volume_id)
        return empty_pb2.Empty()

    # ---------------------------------------------------------------- files
    async def VolumePutFiles(self, req: api_pb2.VolumePutFilesRequest, who: Principal) -> empty_pb2.Empty:
        """v1: the files were uploaded as mount files (MountPutFile), named here by their sha256."""
        self._volumes.get(req.volume_id)
        entries: list[VolumeEntry] = []
        now = time.time()
        for f in req.files:
            sha = check_sha(f.sha256_hex)
            source = self._files.file_path(sha)
            await asyncio.to_thread(self._volumes.objects.adopt, source, sha)
            size = self._volumes.objects.path(sha).stat().st_size
            entries.append(VolumeEntry(f.filename, "file", (f.mode & 0o7777) or 0o644, size, now, sha))
        await self._volumes.put_files(req.volume_id, entries, not req.disallow_overwrite_existing_files)
        return empty_pb2.Empty()

    async def VolumePutFiles2(
        self, req: api_pb2.VolumePutFiles2Request, who: Principal
    ) -> api_pb2.VolumePutFiles2Response:
        """v2: files as lists of 8 MiB blocks; blocks the server lacks are asked for, to be PUT to a URL."""
        self._volumes.get(req.volume_id)
        resp = api_pb2.VolumePutFiles2Response()
        plans: list[tuple[api_pb2.VolumePutFiles2Request.File, list[str]]] = []
        for i, f in enumerate(req.files):
            blocks = [check_sha(b.contents_sha256.hex()) for b in f.blocks]
            if f.size > len(blocks) * BLOCK_SIZE or (blocks and f.size <= (len(blocks) - 1) * BLOCK_SIZE):
                raise InvalidArgument(f"{f.path}: {len(blocks)} blocks cannot hold {f.size} bytes")
            if self._volumes.objects.claim(file_key(blocks, f.size)):
                plans.append((f, blocks))
                continue  # stored already: no block of it is needed
            for j in self._volumes.missing_blocks(blocks):
                resp.missing_blocks.add(
                    file_index=i, block_index=j, put_url=block_url(self._blobs, blocks[j])
                )
            plans.append((f, blocks))
        if resp.missing_blocks:
            return resp
        now = time.time()
        entries: list[VolumeEntry] = []
        for f, blocks in plans:
            sha = await asyncio.to_thread(self._volumes.assemble, blocks, f.size)
            entries.append(VolumeEntry(f.path, "file", (f.mode & 0o7777) or 0o644, f.size, now, sha))
        # The blocks stay until the janitor's next pass after an hour: another upload may be counting on them.
        await self._volumes.put_files(req.volume_id, entries, not req.disallow_overwrite_existing_files)
        return resp

    async def VolumeGetFile2(
        self, req: api_pb2.VolumeGetFile2Request, who: Principal
    ) -> api_pb2.VolumeGetFile2Response:
        entry = self._volumes.file(req.volume_id, req.path)
        start, end = _range(entry, req.start, req.len)
        resp = api_pb2.VolumeGetFile2Response(size=entry.size, start=start, len=end - start)
        pos = start
        while pos < end:
            block_end = min(end, (pos // BLOCK_SIZE + 1) * BLOCK_SIZE)
            resp.get_urls.append(object_url(self._blobs, entry.object, pos, block_end - pos))
            pos = block_end
        return resp

    async def VolumeGetFile(
        self, req: api_pb2.VolumeGetFileRequest, who: Principal
    ) -> api_pb2.VolumeGetFileResponse:
        entry = self._volumes.file(req.volume_id, req.path)
        start, end = _range(entry, req.start, req.len)
        if end - start > 64 * 1024 * 1024:
            raise InvalidArgument("VolumeGetFile reads at most 64 MiB at once; read the file in ranges")
        data = b"".join(self._volumes.objects.read(entry.object, start, end - start))
        return api_pb2.VolumeGetFileResponse(data=data, size=entry.size, start=start, len=end - start)

    async def _list(
        self, volume_id: str, path: str, recursive: bool, limit: int
    ) -> list[list[api_pb2.FileEntry]]:
        entries = self._volumes.listing(volume_id, path, recursive)
        if limit > 0:
            entries = entries[:limit]
        out = [_file_entry(e) for e in entries]
        return [out[i : i + _LIST_BATCH] for i in range(0, len(out), _LIST_BATCH)] or [[]]

    async def VolumeListFiles(
        self, req: api_pb2.VolumeListFilesRequest, who: Principal
    ) -> AsyncIterator[api_pb2.VolumeListFilesResponse]:
        for batch in await self._list(req.volume_id, req.path, req.recursive, req.max_entries):
            yield api_pb2.VolumeListFilesResponse(entries=batch)

    async def VolumeListFiles2(
        self, req: api_pb2.VolumeListFiles2Request, who: Principal
    ) -> AsyncIterator[api_pb2.VolumeListFiles2Response]:
        for batch in await self._list(req.volume_id, req.path, req.recursive, req.max_entries):
            yield api_pb2.VolumeListFiles2Response(entries=batch)

    async def VolumeRemoveFile(self, req: api_pb2.VolumeRemoveFileRequest, who: Principal) -> empty_pb2.Empty:
        await self._volumes.remove(req.volume_id, req.path, req.recursive)
        return empty_pb2.Empty()

    async def VolumeRemoveFile2(
        self, req: api_pb2.VolumeRemoveFile2Request, who: Principal
    ) -> empty_pb2.Empty:
        await self._volumes.remove(req.volume_id, req.path, req.recursive)
        return empty_pb2.Empty()

    async def VolumeCopyFiles(self, req: api_pb2.VolumeCopyFilesRequest, who: Principal) -> empty_pb2.Empty:
        await self._volumes.copy(req.volume_id, list(req.src_paths), req.dst_path, req.recursive)
        return empty_pb2.Empty()

    async def VolumeCopyFiles2(self, req: api_pb2.VolumeCopyFiles2Request, who: Principal) -> empty_pb2.Empty:
        await self._volumes.copy(req.volume_id, list(req.src_paths), req.dst_path, req.recursive)
        return empty_pb2.Empty()
