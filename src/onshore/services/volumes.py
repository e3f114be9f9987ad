"""Volumes: named or ephemeral file trees, changed by uploads, removes and copies, and by containers' commits.

A volume's committed tree lives in the store (one row per file, directory or symlink; files name their
content by sha256) and its contents in VolumeObjects. Every change is one store transaction that also bumps
the volume's commit number, so a crash leaves the volume at its last commit, never half of one. Changes of a
volume are serialized by a lock of its own: of two commits, the later one wins where both touch a path.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import posixpath
import time
from collections.abc import Iterable

from onshore.errors import AlreadyExists, InvalidArgument, NotFound
from onshore.models import KvObject, VolumeEntry
from onshore.services.kv import KvService
from onshore.services.volume_objects import VolumeObjects, check_sha
from onshore.store.base import VolumeStore

FS_V1, FS_V2 = 1, 2
BLOCK_SIZE = 8 * 1024 * 1024  # the client's block size for VolumeFS v2 (modal._utils.blob_utils)
Change = tuple[str, VolumeEntry]


def clean_path(path: str, what: str = "path") -> str:
    """A volume path relative to its root ("" is the root); InvalidArgument for one that leaves it."""
    if "\0" in path:
        raise InvalidArgument(f"The {what} {path[:200]!r} contains a NUL byte")
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"The {what} {path[:200]!r} may not contain '..'")
    return "/".join(parts)


def file_key(blocks: list[str], size: int) -> str:
    """The name of a file uploaded in blocks (VolumeFS v2): a hash of its size and its blocks' hashes, so the
    server never reads the whole file again to name it. Files committed from containers are named by the
    sha256 of their content; both are 64 hex digits, and cannot collide."""
    digest = hashlib.sha256(b"onshore-volume-blocks:" + size.to_bytes(8, "big"))
    for sha in blocks:
        digest.update(bytes.fromhex(sha))
    return digest.hexdigest()


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class VolumeService:
    def __init__(self, store: VolumeStore, kv: KvService, objects: VolumeObjects) -> None:
        self._store = store
        self._kv = kv
        self.objects = objects
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        # The snapshots containers mount or are about to: (volume, commit) -> how many; kept while held.
        self._pins: collections.Counter[tuple[str, int]] = collections.Counter()

    # ---------------------------------------------------------------- identity
    def get_or_create(self, name: str, environment: str, creation: int, version: int) -> KvObject:
        fs_version = version if version in (FS_V1, FS_V2) else FS_V1
        return self._kv.get_or_create("volume", name, environment, creation, fs_version)[0]

    def get(self, volume_id: str) -> KvObject:
        return self._kv.get("volume", volume_id)

    def list_named(self, environment: str) -> list[KvObject]:
        return self._kv.list_named("volume", environment)

    def delete(self, volume_id: str) -> None:
        self._kv.delete("volume", volume_id)  # its tree goes in the same transaction
        # Containers that mount it keep what they see until they end (the janitor removes the rest then).
        self.objects.remove_snapshots(volume_id, keep=self.pinned(volume_id))

    def rename(self, volume_id: str, name: str) -> None:
        self._kv.rename("volume", volume_id, name)

    def collect(self, now: float, mounted: set[str]) -> int:
        """Remove what no volume needs any more: snapshots of deleted volumes that no container mounts
        (`mounted`, read on the event loop), contents no commit names and abandoned uploads (an hour after
        their last use). The number removed. Runs in a thread."""

        def keep(volume_id: str) -> bool:
            return volume_id in mounted or self._store_has(volume_id)

        removed = self.objects.remove_stale(keep, now - 3600)
        return removed + self.objects.remove_unused(self._store.volume_objects(), now - 3600)

    def heartbeat(self, volume_id: str) -> None:
        self._kv.heartbeat("volume", volume_id)

    def lock(self, volume_id: str) -> asyncio.Lock:
        return self._locks[volume_id]

    # ---------------------------------------------------------------- reading
    def version(self, volume_id: str) -> int:
        return self._store.volume_version(volume_id)

    def entry(self, volume_id: str, path: str) -> VolumeEntry | None:
        path = clean_path(path)
        if not path:
            return VolumeEntry("", "dir", 0o755)
        return self._store.volume_entry(volume_id, path)

    def listing(self, volume_id: str, path: str, recursive: bool) -> list[VolumeEntry]:
        """A directory's entries (all below it if recursive), or a file's own entry; NotFound if none."""
        self.get(volume_id)
        path = clean_path(path)
        found = self.entry(volume_id, path)
        if found is None:
            raise NotFound(f"No such file or directory: {path!r}")
        if found.kind != "dir":
            return [found]
        below = [e for e in self._store.volume_tree(volume_id, path) if e.path != path]
        if recursive:
            return below
        depth = path.count("/") + 1 if path else 0
        return [e for e in below if e.path.count("/") == depth]

    def file(self, volume_id: str, path: str) -> VolumeEntry:
        self.get(volume_id)
        found = self.entry(volume_id, path)
        if found is None or found.kind == "dir":
            what = "is a directory" if found else "not found"
            raise NotFound(f"File {clean_path(path)!r} {what}")
        if found.kind == "symlink":
            found = self._follow(volume_id, found)
        return found

    def _follow(self, volume_id: str, link: VolumeEntry, depth: int = 0) -> VolumeEntry:
        if depth > 8:
            raise NotFound(f"Too many levels of symbolic links at {link.path!r}")
        target = posixpath.normpath(posixpath.join(posixpath.dirname(link.path), link.object))
        if target.startswith("/") or target == ".." or target.startswith("../"):
            raise NotFound(f"File {link.path!r} is a symbolic link to {link.object!r}, outside the volume")
        found = self._store.volume_entry(volume_id, target) if target not in ("", ".") else None
        if found is None or found.kind == "dir":
            raise NotFound(f"File {link.path!r} is a symbolic link to {link.object!r}, which is not a file")
        return self._follow(volume_id, found, depth + 1) if found.kind == "symlink" else found

    def commit_tree(self, volume_id: str) -> tuple[int, list[VolumeEntry]]:
        return self._store.volume_commit_tree(volume_id)

    def pin(self, volume_id: str, version: int) -> None:
        self._pins[(volume_id, version)] += 1

    def unpin(self, volume_id: str, version: int) -> None:
        self._pins[(volume_id, version)] -= 1
        if self._pins[(volume_id, version)] <= 0:
            del self._pins[(volume_id, version)]

    def _store_has(self, volume_id: str) -> bool:
        try:
            self.get(volume_id)
        except NotFound:
            return False
        return True

    def mounted_volumes(self) -> set[str]:
        return {v for v, _ in self._pins}

    def pinned(self, volume_id: str) -> set[int]:
        return {v for vid, v in self._pins if vid == volume_id}

    # ---------------------------------------------------------------- changing
    def apply(self, volume_id: str, changes: list[Change]) -> int:
        """Write changes as one commit (with the parent directories they need); the new commit number.
        Callers hold the volume's lock."""
        missing: dict[str, VolumeEntry] = {}
        now = time.time()
        # Directories the changes put themselves (a commit's scan lists each one) need no check.
        checked = {e.path for op, e in changes if op == "put" and e.kind == "dir"}
        for op, entry in changes:
            if op != "put":
                continue
            for parent in _parents(entry.path):
                if parent in checked:
                    continue
                checked.add(parent)
                have = self._store.volume_entry(volume_id, parent)
                if have is None or have.kind != "dir":
                    missing[parent] = VolumeEntry(parent, "dir", 0o755, 0, now)
        prelude: list[Change] = []
        for parent in sorted(missing):
            prelude += [("delete", missing[parent]), ("put", missing[parent])]
        return self._store.volume_apply(volume_id, prelude + changes)

    async def put_files(self, volume_id: str, files: Iterable[VolumeEntry], allow_overwrite: bool) -> int:
        """Upload files (their objects already stored) in one commit; AlreadyExists where one is there and
        overwriting is not allowed, InvalidArgument where a directory is."""
        self.get(volume_id)
        changes: list[Change] = []
        entries = list(files)
        for entry in entries:
            entry.path = clean_path(entry.path, "file path")
            entry.mode &= 0o777  # no setuid, setgid or sticky bits from an upload
            if not entry.path:
                raise InvalidArgument("A file needs a path inside the volume")
        batch = {e.path for e in entries}
        fine: set[str] = set()  # parents checked already: a directory, or nothing yet
        async with self.lock(volume_id):
            for entry in entries:
                for parent in _parents(entry.path):
                    if parent in fine:
                        continue
                    have = self._store.volume_entry(volume_id, parent)
                    if parent in batch or (have is not None and have.kind != "dir"):
                        raise InvalidArgument(f"{parent!r} is a file: {entry.path!r} cannot be put below it")
                    fine.add(parent)
                have = self._store.volume_entry(volume_id, entry.path)
                if have is not None and have.kind == "dir":
                    raise InvalidArgument(f"{entry.path!r} is a directory: a file cannot replace it")
                if have is not None and not allow_overwrite:
                    raise AlreadyExists(
                        f"{entry.path}: already exists (use force=True / --force to replace it)"
                    )
                changes += [("delete", entry), ("put", entry)]
            return self.apply(volume_id, changes)

    async def remove(self, volume_id: str, path: str, recursive: bool) -> None:
        self.get(volume_id)
        path = clean_path(path)
        async with self.lock(volume_id):
            if not path:
                if not recursive:
                    raise InvalidArgument("Removing the volume's root needs recursive=True (-r)")
                self.apply(volume_id, [("delete", VolumeEntry("", "dir"))])
                return
            have = self._store.volume_entry(volume_id, path)
            if have is None:
                raise NotFound(f"No such file or directory: {path!r}")
            if have.kind == "dir" and not recursive:
                below = self._store.volume_tree(volume_id, path)
                if len(below) > 1:
                    raise InvalidArgument(
                        f"{path!r} is a non-empty directory: remove it with recursive=True (-r)"
                    )
            self.apply(volume_id, [("delete", have)])

    async def copy(self, volume_id: str, sources: list[str], dest: str, recursive: bool) -> None:
        """Copy within the volume, as cp does: into dest when it is a directory (or several sources are
        given), else to dest itself."""
        self.get(volume_id)
        dest = clean_path(dest, "destination")
        if not sources:
            raise InvalidArgument("Copy needs at least one source path")
        async with self.lock(volume_id):
            into = self.entry(volume_id, dest)
            as_dir = (into is not None and into.kind == "dir") or len(sources) > 1
            if len(sources) > 1 and into is None:
                raise NotFound(f"Destination directory {dest!r} does not exist")
            if as_dir and into is not None and into.kind != "dir":
                raise InvalidArgument(f"Destination {dest!r} is not a directory")
            changes: list[Change] = []
            for raw in sources:
                src = clean_path(raw, "source")
                have = self.entry(volume_id, src)
                if have is None:
                    raise NotFound(f"No such file or directory: {src!r}")
                name = src.rsplit("/", 1)[-1]
                target = posixpath.join(dest, name) if as_dir else dest
                if have.kind == "dir":
                    if not recursive:
                        raise InvalidArgument(f"{src!r} is a directory: copy it with recursive=True (-r)")
                    if target == src or target.startswith(src + "/"):
                        raise InvalidArgument(f"Cannot copy {src!r} into itself")
                    tree = (
                        self._store.volume_tree(volume_id, src) if src else self._store.volume_tree(volume_id)
                    )
                    changes.append(("delete", VolumeEntry(target, "dir")))
                    for e in tree:
                        rel = e.path[len(src) :].lstrip("/") if src else e.path
                        new = VolumeEntry(
                            posixpath.join(target, rel).rstrip("/"), e.kind, e.mode, e.size, e.mtime, e.object
                        )
                        if new.path:
                            changes.append(("put", new))
                else:
                    new = VolumeEntry(target, have.kind, have.mode, have.size, time.time(), have.object)
                    changes += [("delete", new), ("put", new)]
            self.apply(volume_id, changes)

    # ---------------------------------------------------------------- v2 uploads (blocks)
    def missing_blocks(self, blocks: list[str]) -> list[int]:
        return [i for i, sha in enumerate(blocks) if not self.objects.has_block(check_sha(sha))]

    def assemble(self, blocks: list[str], size: int) -> str:
        """The object of a file uploaded as blocks (made from them unless already stored); its name."""
        key = file_key(blocks, size)
        if not self.objects.claim(key):
            self.objects.put_concat(key, blocks, size, BLOCK_SIZE)
        return key
