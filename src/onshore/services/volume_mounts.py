"""Volumes in containers: each mount an overlay of a commit, committed and reloaded as Modal documents.

A container sees a volume as of its start, or its last reload: the overlay's lower dir is that commit's
snapshot, and what the container writes lands in the overlay's upper dir, on the host. A commit reads the
upper dir (changed files, whiteouts for deletions, opaque dirs for replaced ones), stores what changed and
writes it as one commit on top of the latest one: two containers that change different files both keep
theirs, and of two that change one file the later commit wins. After a commit, and on reload, the container
gets a fresh overlay of the latest commit, unless files in the old one are open: a commit then leaves the
container's view as it is, and a reload fails with the error Modal gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from onshore.errors import Conflict, InvalidArgument, NotFound
from onshore.models import VolumeEntry, VolumeMountRef
from onshore.runtimes import overlay
from onshore.runtimes.base import Runtime, VolumeBind
from onshore.services.volume_objects import remove_tree
from onshore.services.volumes import Change, VolumeService, clean_path

log = logging.getLogger("onshore.volumes")

OPEN_FILES = "there are open files preventing the operation"
_OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")


@dataclass
class ContainerVolume:
    """One volume mounted in one container."""

    task_id: str
    ref: VolumeMountRef
    folder: Path  # mounts/<task>/<n>: the host mount point and each generation's upper and work dirs
    generation: int = 0
    version: int = 0  # the commit its lower dir shows
    # What of the current upper dir is committed already: path -> a signature of that entry then.
    applied: dict[str, tuple[object, ...]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def point(self) -> Path:
        return self.folder / "point"

    def upper(self, generation: int | None = None) -> Path:
        return self.folder / f"g{self.generation if generation is None else generation}" / "upper"

    def work(self, generation: int | None = None) -> Path:
        return self.folder / f"g{self.generation if generation is None else generation}" / "work"


def _opaque(path: str) -> bool:
    for name in _OPAQUE:
        with contextlib.suppress(OSError):
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
    return False


def scan_upper(
    upper: Path, prefix: str, applied: dict[str, tuple[object, ...]], volumes: VolumeService
) -> tuple[list[Change], dict[str, tuple[object, ...]]]:
    """The changes an overlay's upper dir holds that are not committed yet, as volume changes under prefix
    (storing the changed files' contents); and the signatures to remember once they are committed."""
    changes: list[Change] = []
    seen: dict[str, tuple[object, ...]] = {}

    def walk(folder: str, rel: str) -> None:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for item in entries:
            sub = f"{rel}/{item.name}" if rel else item.name
            path = "/".join(p for p in (prefix, sub) if p)
            st = item.stat(follow_symlinks=False)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # a whiteout: deleted
                sig: tuple[object, ...] = ("whiteout", st.st_ino, st.st_ctime_ns)
                seen[sub] = sig
                if applied.get(sub) != sig:
                    changes.append(("delete", VolumeEntry(path, "file")))
            elif stat.S_ISDIR(st.st_mode):
                sig = ("dir", mode, _opaque(item.path), st.st_ino)
                seen[sub] = sig
                if applied.get(sub) != sig:
                    entry = VolumeEntry(path, "dir", mode, 0, st.st_mtime)
                    if sig[2] and applied.get(sub, ())[2:3] != (True,):  # replaced the dir beneath
                        changes.append(("delete", entry))
                    changes.append(("put", entry))
                walk(item.path, sub)
            elif stat.S_ISREG(st.st_mode):
                sig = ("file", st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, mode)
                seen[sub] = sig
                if applied.get(sub) != sig:
                    sha, size = volumes.objects.put_file(Path(item.path))
                    entry = VolumeEntry(path, "file", mode, size, st.st_mtime, sha)
                    changes.extend([("delete", entry), ("put", entry)])
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(item.path)
                sig = ("symlink", target, st.st_ino)
                seen[sub] = sig
                if applied.get(sub) != sig:
                    entry = VolumeEntry(path, "symlink", 0o777, len(target), st.st_mtime, target)
                    changes.extend([("delete", entry), ("put", entry)])
            # FIFOs, sockets and devices are not kept in a volume.

    if upper.is_dir():
        walk(str(upper), "")
    return changes, seen


class VolumeMounts:
    def __init__(self, volumes: VolumeService, runtime: Runtime) -> None:
        self._volumes = volumes
        self._runtime = runtime
        self._root = volumes.objects.root / "mounts"
        self._by_task: dict[str, list[ContainerVolume]] = {}

    # ---------------------------------------------------------------- container lifecycle
    async def attach(self, task_id: str, refs: list[VolumeMountRef]) -> list[VolumeBind]:
        """Mount each volume's latest commit on the host, for the runtime to bind into the container."""
        if not refs:
            return []
        mounted: list[ContainerVolume] = []
        self._by_task[task_id] = mounted
        try:
            for n, ref in enumerate(refs):
                self._volumes.get(ref.volume_id)
                cv = ContainerVolume(task_id, ref, self._root / task_id / str(n))
                lower = await self._lower(cv)
                cv.point.mkdir(parents=True, exist_ok=True)
                upper, work = self._fresh_dirs(cv)
                await asyncio.to_thread(overlay.mount_overlay, str(cv.point), lower, upper, work)
                mounted.append(cv)
        except BaseException:
            await self.detach(task_id)
            raise
        return [VolumeBind(str(cv.point), cv.ref.target, cv.ref.read_only) for cv in mounted]

    async def detach(self, task_id: str) -> None:
        """The container ended: its mounts and uncommitted writes go (a commit is the container's to ask)."""
        mounted = self._by_task.pop(task_id, [])
        for cv in mounted:
            with contextlib.suppress(overlay.MountError):
                await asyncio.to_thread(overlay.unmount, str(cv.point))
        await asyncio.to_thread(remove_tree, self._root / task_id)
        self._drop_unused_snapshots({cv.ref.volume_id for cv in mounted})

    def cleanup_leftovers(self) -> None:
        """At start: mounts of containers a previous run of the server left behind."""
        if not self._root.is_dir():
            return
        for task_dir in self._root.iterdir():
            if task_dir.name.startswith("."):
                continue
            for point in task_dir.glob("*/point"):
                with contextlib.suppress(overlay.MountError):
                    overlay.unmount(str(point))
            remove_tree(task_dir)

    async def _lower(self, cv: ContainerVolume) -> list[str]:
        version, tree = await asyncio.to_thread(self._volumes.snapshot, cv.ref.volume_id)
        cv.version = version
        sub = clean_path(cv.ref.sub_path, "sub_path")
        lower = tree / sub if sub else tree
        empty = self._root / ".empty"
        empty.mkdir(exist_ok=True)
        if not lower.is_dir():  # a sub_path the volume does not have yet: it starts empty
            lower = empty
        # A read-only overlay (no upper dir) takes two lower dirs at least: an empty one goes under it.
        return [str(lower), str(empty)] if cv.ref.read_only else [str(lower)]

    def _fresh_dirs(self, cv: ContainerVolume) -> tuple[str, str]:
        if cv.ref.read_only:
            return "", ""
        cv.upper().mkdir(parents=True, exist_ok=True)
        cv.work().mkdir(parents=True, exist_ok=True)
        return str(cv.upper()), str(cv.work())

    def _drop_unused_snapshots(self, volume_ids: set[str]) -> None:
        for volume_id in volume_ids:
            keep = {
                cv.version
                for mounts in self._by_task.values()
                for cv in mounts
                if cv.ref.volume_id == volume_id
            }
            keep.add(self._volumes.version(volume_id))
            self._volumes.objects.remove_snapshots(volume_id, keep)

    # ---------------------------------------------------------------- commit and reload
    def _mount_of(self, task_id: str, volume_id: str) -> ContainerVolume:
        for cv in self._by_task.get(task_id, []):
            if cv.ref.volume_id == volume_id:
                return cv
        raise Conflict(
            f"Volume {volume_id} is not mounted in this container: commit() and reload() only work "
            "inside a container that mounts the volume"
        )

    def mounted_in(self, task_id: str) -> list[str]:
        return [cv.ref.volume_id for cv in self._by_task.get(task_id, [])]

    async def commit(self, task_id: str, volume_id: str) -> int:
        """Commit the container's changes; then show it the latest commit where nothing in the volume is open.
        Returns the commit number."""
        cv = self._mount_of(task_id, volume_id)
        async with cv.lock:
            version = await self._commit(cv)
            with contextlib.suppress(overlay.MountError):
                await self._swap(cv)
            return version

    async def reload(self, task_id: str, volume_id: str) -> None:
        """Show the container the latest commit (committing its changes first); Conflict while files in the
        volume are open."""
        cv = self._mount_of(task_id, volume_id)
        async with cv.lock:
            await self._commit(cv)
            try:
                await self._swap(cv)
            except overlay.MountError as exc:
                if exc.busy:
                    raise Conflict(f"Volume {volume_id} cannot be reloaded: {OPEN_FILES}") from None
                raise

    async def _commit(self, cv: ContainerVolume) -> int:
        volume_id = cv.ref.volume_id
        if cv.ref.read_only:
            return self._volumes.version(volume_id)
        prefix = clean_path(cv.ref.sub_path, "sub_path")
        try:
            changes, seen = await asyncio.to_thread(scan_upper, cv.upper(), prefix, cv.applied, self._volumes)
        except FileNotFoundError as exc:
            raise NotFound(
                f"Volume {volume_id}: a file vanished while it was committed ({exc.filename})"
            ) from None
        except OSError as exc:
            if isinstance(exc, PermissionError):
                raise InvalidArgument(
                    f"Volume {volume_id}: cannot read {exc.filename}: {exc.strerror}"
                ) from None
            raise
        async with self._volumes.lock(volume_id):
            self._volumes.get(volume_id)
            version = self._volumes.apply(volume_id, changes) if changes else self._volumes.version(volume_id)
        cv.applied = seen
        if changes:
            log.info(
                "volume %s: commit %d from %s (%d changes)", volume_id, version, cv.task_id, len(changes) // 2
            )
        return version

    async def _swap(self, cv: ContainerVolume) -> None:
        """Give the container a fresh overlay of the latest commit, if it is newer than the one it sees or its
        upper dir holds committed changes."""
        latest = self._volumes.version(cv.ref.volume_id)
        if latest == cv.version and not cv.applied:
            return
        pid = await self._runtime.namespace_pid(cv.task_id)
        if pid is None:
            raise overlay.MountError("the container has no mount namespace to reload in")
        old = cv.generation
        old_version = cv.version
        cv.generation += 1
        try:
            lower = await self._lower(cv)
            upper, work = self._fresh_dirs(cv)
            await overlay.swap(pid, cv.ref.target, lower, upper, work)
        except BaseException:
            remove_tree(cv.folder / f"g{cv.generation}")
            cv.generation, cv.version = old, old_version
            raise
        cv.applied = {}
        if old == 0:
            with contextlib.suppress(overlay.MountError):
                await asyncio.to_thread(overlay.unmount, str(cv.point))
        await asyncio.to_thread(remove_tree, cv.folder / f"g{old}")
        self._drop_unused_snapshots({cv.ref.volume_id})
