"""Volumes in containers: each mount an overlay of a commit, committed and reloaded as Modal documents.

A container sees a volume as of its start, or its last reload: the overlay's lower dir is that commit's
snapshot, and what the container writes lands in the overlay's upper dir, on the host. A commit reads the
upper dir (changed files, whiteouts for deletions, opaque dirs for replaced ones) without following a link
the container planted there, stores what changed and writes it as one commit on top of the latest one: two
containers that change different files both keep theirs, and of two that change one file the later commit
wins. After a commit, and on reload, the container gets a fresh overlay of the latest commit, unless files in
the old one are open: a commit then leaves the container's view as it is, and a reload fails with the error
Modal gives. What the container wrote to the old overlay while the commit ran is committed once it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from onshore.errors import Conflict, InvalidArgument, Unavailable
from onshore.models import VolumeEntry, VolumeMountRef
from onshore.runtimes import overlay
from onshore.runtimes.base import Runtime, VolumeBind
from onshore.services.volume_objects import remove_tree
from onshore.services.volumes import Change, VolumeService, clean_path

log = logging.getLogger("onshore.volumes")

OPEN_FILES = "there are open files preventing the operation"
MAX_DEPTH = 200  # directory levels a commit reads (deeper: refused, never a crash of the scan)
_OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
Signature = tuple[object, ...]
T = TypeVar("T")


@dataclass
class ContainerVolume:
    """One volume mounted in one container."""

    task_id: str
    ref: VolumeMountRef
    folder: Path  # mounts/<task>/<n>: the host mount point and each generation's upper and work dirs
    generation: int = 0
    version: int = -1  # the commit its lower dir shows (pinned while it does); -1: none yet
    # What of the current upper dir is committed already: path -> a signature of that entry then.
    applied: dict[str, Signature] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    gone: bool = False  # the container ended: nothing more to commit or swap
    # Upper dirs of overlays swapped out whose last writes could not be committed yet: (generation, applied).
    stale: list[tuple[int, dict[str, Signature]]] = field(default_factory=list)

    @property
    def point(self) -> Path:
        return self.folder / "point"

    def upper(self, generation: int | None = None) -> Path:
        return self.folder / f"g{self.generation if generation is None else generation}" / "upper"

    def work(self, generation: int | None = None) -> Path:
        return self.folder / f"g{self.generation if generation is None else generation}" / "work"


def _opaque(fd: int) -> bool:
    for name in _OPAQUE:
        with contextlib.suppress(OSError):
            if os.getxattr(fd, name) == b"y":
                return True
    return False


def _utf8(name: str, where: str) -> str:
    try:
        name.encode()
    except UnicodeEncodeError:
        raise InvalidArgument(
            f"A volume keeps UTF-8 file names only: {where}/{name!r} cannot be committed"
        ) from None
    return name


def scan_upper(
    upper: Path, prefix: str, applied: dict[str, Signature], volumes: VolumeService
) -> tuple[list[Change], dict[str, Signature]]:
    """The changes an overlay's upper dir holds that are not committed yet, as volume changes under prefix
    (storing the changed files' contents); and the signatures to remember once they are committed. Every
    entry is opened relative to its directory's fd and never through a symbolic link, so a container that
    swaps a file for a link while this runs cannot make it read the host's files."""
    changes: list[Change] = []
    seen: dict[str, Signature] = {}

    def vol_path(sub: str) -> str:
        return "/".join(p for p in (prefix, sub) if p)

    def walk(dir_fd: int, rel: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise InvalidArgument(
                f"A volume keeps at most {MAX_DEPTH} levels of directories: {rel[:200]!r}..."
            )
        with os.scandir(dir_fd) as it:
            names = sorted(_utf8(e.name, rel) for e in it)
        for name in names:
            sub = f"{rel}/{name}" if rel else name
            path = vol_path(sub)
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the listing: what is there now is what counts
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # a whiteout: deleted
                sig: Signature = ("whiteout", st.st_ino, st.st_ctime_ns)
                seen[sub] = sig
                if applied.get(sub) != sig:
                    changes.append(("delete", VolumeEntry(path, "file")))
            elif stat.S_ISDIR(st.st_mode):
                try:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except (FileNotFoundError, NotADirectoryError, OSError) as exc:
                    if isinstance(exc, (FileNotFoundError, NotADirectoryError)) or exc.errno == errno.ELOOP:
                        continue  # replaced since the stat
                    raise
                try:
                    sig = ("dir", mode & 0o1777, _opaque(fd), os.fstat(fd).st_ino)
                    seen[sub] = sig
                    if applied.get(sub) != sig:
                        entry = VolumeEntry(path, "dir", mode & 0o1777, 0, st.st_mtime)
                        before = applied.get(sub)
                        was_opaque = before is not None and before[0] == "dir" and before[2] is True
                        if sig[2] and not was_opaque:  # replaced the dir beneath
                            changes.append(("delete", entry))
                        changes.append(("put", entry))
                    walk(fd, sub, depth + 1)
                finally:
                    os.close(fd)
            elif stat.S_ISREG(st.st_mode):
                sig = ("file", st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, mode & 0o777)
                seen[sub] = sig
                if applied.get(sub) == sig:
                    continue
                try:
                    fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ELOOP):
                        seen.pop(sub)
                        continue  # replaced by a link or gone since the stat
                    raise
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        seen.pop(sub)
                        continue
                    sha, size = volumes.objects.put_fd(fd)
                finally:
                    os.close(fd)
                entry = VolumeEntry(path, "file", mode & 0o777, size, st.st_mtime, sha)
                changes.extend([("delete", entry), ("put", entry)])
            elif stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(name, dir_fd=dir_fd)
                except OSError:
                    continue
                sig = ("symlink", _utf8(target, rel), st.st_ino)
                seen[sub] = sig
                if applied.get(sub) != sig:
                    entry = VolumeEntry(path, "symlink", 0o777, len(target), st.st_mtime, target)
                    changes.extend([("delete", entry), ("put", entry)])
            # FIFOs, sockets and devices are not kept in a volume.

    try:
        root = os.open(upper, _DIR_FLAGS)
    except FileNotFoundError:
        if applied:  # committed from it before: it cannot just have gone
            raise Unavailable(f"The container's volume writes ({upper}) are gone") from None
        root = -1
    if root >= 0:
        try:
            walk(root, "", 0)
        finally:
            os.close(root)
    # Committed before and gone from the upper dir since (a file the container made, then deleted or
    # renamed: the overlay leaves no whiteout for it): deleted.
    for sub in sorted(set(applied) - set(seen)):
        changes.append(("delete", VolumeEntry(vol_path(sub), "file")))
    return changes, seen


async def _finish(work: Awaitable[T]) -> T:
    """Await work that must not stop halfway (a commit, an overlay swap): a cancelled caller (a client's
    deadline) leaves it running to its end."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # its failure is logged where raised
        raise


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
                await self._ensure_sub_path(ref)
                cv = ContainerVolume(task_id, ref, self._root / task_id / str(n))
                mounted.append(cv)
                lower = await self._lower(cv)
                cv.point.mkdir(parents=True, exist_ok=True)
                upper, work = self._fresh_dirs(cv)
                await asyncio.to_thread(overlay.mount_overlay, str(cv.point), lower, upper, work)
        except BaseException:
            await self.detach(task_id)
            raise
        return [VolumeBind(str(cv.point), cv.ref.target, cv.ref.read_only) for cv in mounted]

    async def detach(self, task_id: str) -> None:
        """The container ended: its mounts and uncommitted writes go (a commit is the container's to ask),
        once a commit or reload in progress has finished."""
        mounted = self._by_task.pop(task_id, [])
        for cv in mounted:
            async with cv.lock:
                cv.gone = True
                with contextlib.suppress(overlay.MountError):
                    await asyncio.to_thread(overlay.unmount, str(cv.point))
                if cv.version >= 0:
                    self._volumes.unpin(cv.ref.volume_id, cv.version)
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

    async def _ensure_sub_path(self, ref: VolumeMountRef) -> None:
        """A sub_path the volume does not have is created (a commit of the directory) before the mount; one
        that leads through anything but directories is refused (a symbolic link could lead off the volume)."""
        sub = clean_path(ref.sub_path, "sub_path")
        if not sub:
            return
        async with self._volumes.lock(ref.volume_id):
            # (A read-only mount of a missing sub_path shows it empty, writing nothing.)
            parts = sub.split("/")
            for i in range(1, len(parts) + 1):
                found = self._volumes.entry(ref.volume_id, "/".join(parts[:i]))
                if found is None:
                    break
                if found.kind != "dir":
                    raise InvalidArgument(f"sub_path {sub!r}: the volume's {found.path!r} is not a directory")
            else:
                return
            if not ref.read_only:
                self._volumes.apply(ref.volume_id, [("put", VolumeEntry(sub, "dir", 0o755, 0, time.time()))])

    async def _lower(self, cv: ContainerVolume) -> list[str]:
        """The lower dirs of a fresh overlay of the volume's latest commit; the container's volume now shows
        (and pins) that commit."""
        volume_id = cv.ref.volume_id
        version, entries = await asyncio.to_thread(self._volumes.commit_tree, volume_id)
        self._volumes.pin(volume_id, version)
        try:
            tree = await asyncio.to_thread(self._volumes.objects.snapshot, volume_id, version, entries)
        except BaseException:
            self._volumes.unpin(volume_id, version)
            raise
        if cv.version >= 0:
            self._volumes.unpin(volume_id, cv.version)
        cv.version = version
        sub = clean_path(cv.ref.sub_path, "sub_path")
        lower = tree / sub if sub else tree
        empty = self._root / ".empty"
        empty.mkdir(exist_ok=True)
        real = os.path.realpath(lower)
        if real != str(tree) and not real.startswith(str(tree) + "/"):
            raise InvalidArgument(f"sub_path {sub!r} leads outside the volume")
        if not lower.is_dir():  # a sub_path removed since the mount was planned: it starts empty
            lower = empty
        if not cv.ref.read_only:
            return [str(lower)]
        # A read-only overlay (no upper dir) takes two lower dirs at least: an empty one goes under it.
        under = self._root / (".empty2" if lower == empty else ".empty")
        under.mkdir(exist_ok=True)
        return [str(lower), str(under)]

    def _fresh_dirs(self, cv: ContainerVolume) -> tuple[str, str]:
        if cv.ref.read_only:
            return "", ""
        cv.upper().mkdir(parents=True, exist_ok=True)
        cv.work().mkdir(parents=True, exist_ok=True)
        return str(cv.upper()), str(cv.work())

    def _drop_unused_snapshots(self, volume_ids: set[str]) -> None:
        for volume_id in volume_ids:
            keep = self._volumes.pinned(volume_id) | {self._volumes.version(volume_id)}
            self._volumes.objects.remove_snapshots(volume_id, keep)

    # ---------------------------------------------------------------- commit and reload
    def _mounts_of(self, task_id: str, volume_id: str) -> list[ContainerVolume]:
        found = [cv for cv in self._by_task.get(task_id, []) if cv.ref.volume_id == volume_id]
        if not found:
            raise Conflict(
                f"Volume {volume_id} is not mounted in this container: commit() and reload() only work "
                "inside a container that mounts the volume"
            )
        return found

    def mounted_in(self, task_id: str) -> list[str]:
        return [cv.ref.volume_id for cv in self._by_task.get(task_id, [])]

    async def commit(self, task_id: str, volume_id: str) -> int:
        """Commit the container's changes; then show it the latest commit where nothing in the volume is open.
        Returns the commit number."""
        return await _finish(self._commit_all(task_id, volume_id, reload=False))

    async def reload(self, task_id: str, volume_id: str) -> None:
        """Show the container the latest commit (committing its changes first); Conflict while files in the
        volume are open."""
        await _finish(self._commit_all(task_id, volume_id, reload=True))

    async def _commit_all(self, task_id: str, volume_id: str, reload: bool) -> int:
        version = 0
        for cv in self._mounts_of(task_id, volume_id):  # a volume mounted at two paths: both
            async with cv.lock:
                if cv.gone:
                    raise Conflict(f"The container {task_id} has ended: its volume {volume_id} is unmounted")
                version = await self._commit(cv)
                try:
                    if await self._swap(cv):
                        # It wrote during the commit, and that is committed now: show it that commit too.
                        await self._swap(cv)
                except overlay.MountError as exc:
                    if reload and exc.busy:
                        raise Conflict(f"Volume {volume_id} cannot be reloaded: {OPEN_FILES}") from None
                    if reload:
                        raise Conflict(f"Volume {volume_id} cannot be reloaded: {exc}") from None
                    log.info("volume %s: %s keeps its view after the commit (%s)", volume_id, task_id, exc)
        return version

    async def _commit(self, cv: ContainerVolume, upper: Path | None = None) -> int:
        volume_id = cv.ref.volume_id
        if cv.ref.read_only:
            return self._volumes.version(volume_id)
        if upper is None:
            for generation, applied in list(cv.stale):  # older writes first: the newer ones win
                old = ContainerVolume(cv.task_id, cv.ref, cv.folder, generation, cv.version, applied)
                await self._commit(old, cv.upper(generation))
                cv.stale.remove((generation, applied))
                await asyncio.to_thread(remove_tree, cv.folder / f"g{generation}")
        prefix = clean_path(cv.ref.sub_path, "sub_path")
        try:
            changes, seen = await asyncio.to_thread(
                scan_upper, upper or cv.upper(), prefix, cv.applied, self._volumes
            )
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                # Something in the volume changed under the scan (a dir became a file...): the client retries.
                raise Unavailable(
                    f"Volume {volume_id} changed while it was committed ({exc}); try again"
                ) from None
            raise Conflict(f"Volume {volume_id} cannot be committed: {exc}") from None
        async with self._volumes.lock(volume_id):
            self._volumes.get(volume_id)
            version = self._volumes.apply(volume_id, changes) if changes else self._volumes.version(volume_id)
        cv.applied = seen
        if changes:
            log.info(
                "volume %s: commit %d from %s (%d changes)", volume_id, version, cv.task_id, len(changes)
            )
        return version

    async def _swap(self, cv: ContainerVolume) -> bool:
        """Give the container a fresh overlay of the latest commit, if it is newer than the one it sees or its
        upper dir holds committed changes; then commit what it wrote to the old overlay in the meantime.
        Whether that made a commit (which the container does not see yet)."""
        latest = self._volumes.version(cv.ref.volume_id)
        if latest == cv.version and not cv.applied:
            return False
        pid = await self._runtime.namespace_pid(cv.task_id)
        if pid is None:
            raise overlay.MountError("the container has no mount namespace to reload in")
        old, old_version = cv.generation, cv.version
        cv.generation += 1
        self._volumes.pin(cv.ref.volume_id, old_version)  # the old lower stays until the swap is done
        try:
            lower = await self._lower(cv)
            upper, work = self._fresh_dirs(cv)
            await overlay.swap(pid, cv.ref.target, lower, upper, work)
        except BaseException:
            remove_tree(cv.folder / f"g{cv.generation}")
            if cv.version != old_version:
                # _lower pinned the new commit and let go of the old one: the extra pin is the old one's now.
                self._volumes.unpin(cv.ref.volume_id, cv.version)
            else:
                self._volumes.unpin(cv.ref.volume_id, old_version)
            cv.generation, cv.version = old, old_version
            raise
        # The old overlay is unmounted in the container: nothing writes to its upper dir any more. What it got
        # since the scan is committed now (or, if that fails, with the container's next commit).
        leftover = ContainerVolume(cv.task_id, cv.ref, cv.folder, old, cv.version, cv.applied)
        cv.applied = {}
        before = self._volumes.version(cv.ref.volume_id)
        committed = True
        try:
            await self._commit(leftover, cv.upper(old))
        except Exception as exc:
            log.warning(
                "volume %s: what %s wrote during a commit waits for its next one: %s",
                cv.ref.volume_id,
                cv.task_id,
                exc,
            )
            cv.stale.append((old, leftover.applied))
            committed = False
        finally:
            self._volumes.unpin(cv.ref.volume_id, old_version)
            if old == 0:
                with contextlib.suppress(overlay.MountError):
                    await asyncio.to_thread(overlay.unmount, str(cv.point))
            if committed:
                await asyncio.to_thread(remove_tree, cv.folder / f"g{old}")
            self._drop_unused_snapshots({cv.ref.volume_id})
        return committed and self._volumes.version(cv.ref.volume_id) != before
