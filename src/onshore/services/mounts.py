"""Mounts: content-addressed file uploads, and the host directories that put them under /root."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from onshore import ids
from onshore.config import private_dir
from onshore.errors import InvalidArgument, NotFound, quoted
from onshore.models import Mount, MountFile
from onshore.services.blobs import (
    create_private,
    is_regular,
    open_regular,
    storage_error,
)
from onshore.services.clock import Clock
from onshore.store.base import MountStore

_SHA_RE = re.compile(r"[0-9a-f]{64}")
MAX_INLINE_FILE_BYTES = 64 * 1024**2
CLIENT_MOUNT_PREFIX = "modal-client-mount-"


class MountService:
    def __init__(self, store: MountStore, files_root: Path, workdirs_root: Path, clock: Clock) -> None:
        self._store = store
        self._files = files_root
        self._workdirs = workdirs_root
        private_dir(self._files)  # users' code: owner-only, like the rest of the data dir
        self._workdirs.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._client_mounts: dict[str, Mount] = {}

    def file_path(self, sha256_hex: str) -> Path:
        return self._files / _check_sha(sha256_hex)[:2] / sha256_hex

    def _has(self, sha256_hex: str) -> bool:
        return is_regular(self.file_path(sha256_hex))

    def missing(self, hashes: list[str]) -> list[str]:
        for h in hashes:
            _check_sha(h)
        return [h for h in hashes if not self._has(h)]

    def put_file(self, sha256_hex: str, data: bytes) -> None:
        if hashlib.sha256(data).hexdigest() != _check_sha(sha256_hex):
            raise InvalidArgument(f"File content does not match its sha256 {sha256_hex}")
        self._store_file(sha256_hex, lambda fd: _write_all(fd, data))

    def put_file_linked(self, sha256_hex: str, source: Path, name: str) -> None:
        """Store an uploaded blob's file by linking it (it is checked against its sha256 first): no second
        copy of a large upload. A copy where a link cannot be made."""
        path = self.file_path(_check_sha(sha256_hex))
        if self._has(sha256_hex):
            return
        digest = hashlib.sha256()
        with open_regular(source, name) as src:
            while chunk := src.read(4 * 1024 * 1024):
                digest.update(chunk)
        if digest.hexdigest() != sha256_hex:
            raise InvalidArgument(f"File content does not match its sha256 {sha256_hex}")
        try:
            path.parent.mkdir(exist_ok=True)
            os.chmod(path.parent, 0o700)
            tmp = path.with_name(f".{sha256_hex}.{os.getpid()}.{os.urandom(4).hex()}.link")
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except OSError as exc:
            raise storage_error(f"store mount file {sha256_hex}", self._files, exc) from None

    def _store_file(self, sha256_hex: str, write: Callable[[int], None]) -> None:
        """Write a content-addressed file owner-only, atomically: a failure (a full disk) leaves nothing."""
        path = self.file_path(sha256_hex)
        if self._has(sha256_hex):
            return
        try:
            path.parent.mkdir(exist_ok=True)
            os.chmod(path.parent, 0o700)
            fd, tmp = create_private(path.parent, sha256_hex)  # callers may be threads: a name of its own
        except OSError as exc:
            raise storage_error(f"store mount file {sha256_hex}", self._files, exc) from None
        try:
            try:
                write(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            raise storage_error(f"store mount file {sha256_hex}", self._files, exc) from None
        finally:
            tmp.unlink(missing_ok=True)

    def _copy_out(self, sha256_hex: str, dest: Path, mode: int) -> None:
        """Copy a stored file to dest (never following a link planted in the file store)."""
        with (
            open_regular(self.file_path(sha256_hex), f"Mount file {sha256_hex}") as src,
            dest.open("wb") as out,
        ):
            shutil.copyfileobj(src, out, 4 * 1024 * 1024)
        os.chmod(dest, mode & 0o777 or 0o644)

    def client_mount(self, deployment_name: str) -> Mount:
        """The mount that stands for the client package; the container environment provides it."""
        mount = self._client_mounts.get(deployment_name)
        if mount is None:
            version = deployment_name[len(CLIENT_MOUNT_PREFIX) :]
            mount = Mount(
                ids.new_id("mount"),
                [],
                self._clock.now(),
                deployment_name=deployment_name,
                kind="client",
                client_version=version,
            )
            self._store.put_mount(mount)
            self._client_mounts[deployment_name] = mount
        return mount

    def create(
        self, files: list[MountFile], app_id: str, deployment_name: str = "", namespace: int = 0
    ) -> Mount:
        for f in files:
            if not f.filename.startswith("/"):
                raise InvalidArgument(f"Mount paths must be absolute: {quoted(f.filename, 200)}")
            if ".." in Path(f.filename).parts:
                raise InvalidArgument(f"Mount paths may not contain '..': {f.filename!r}")
            if "\0" in f.filename or not _relative_parts(f.filename):
                raise InvalidArgument(f"Mount paths must name a file: {f.filename!r}")
        absent = self.missing([f.sha256_hex for f in files])
        if absent:
            raise NotFound(f"Mount files were never uploaded: {', '.join(absent[:5])}")
        mount = Mount(ids.new_id("mount"), files, self._clock.now(), deployment_name, namespace, app_id)
        self._store.put_mount(mount)
        return mount

    def get(self, mount_id: str) -> Mount:
        mount = self._store.get_mount(mount_id)
        if mount is None:
            raise NotFound(f"Mount {mount_id} not found")
        return mount

    def checksum(self, mount: Mount) -> str:
        h = hashlib.sha256()
        for f in sorted(mount.files, key=lambda f: f.filename):
            h.update(f"{f.filename}:{f.sha256_hex}:{f.mode}\n".encode())
        return h.hexdigest()

    def client_version(self, mount_ids: list[str]) -> str:
        for mount_id in mount_ids:
            mount = self.get(mount_id)
            if mount.kind == "client":
                return mount.client_version
        return ""

    def materialize_tree(self, mount_id: str) -> Path:
        """A host directory laid out as '/' holding this mount's files at their absolute paths (cached)."""
        mount = self.get(mount_id)
        target = self._workdirs / f"tree-{self.checksum(mount)[:24]}"
        ready = target.with_name(target.name + ".ready")  # beside the tree: nothing extra inside it
        if ready.exists():
            return target / "root"
        tmp = self._workdirs / f"tree-{os.getpid()}.{ids.new_secret()[-8:]}"
        for f in mount.files:
            dest = tmp.joinpath("root", *_relative_parts(f.filename))
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._copy_out(f.sha256_hex, dest, f.mode)
        (tmp / "root").mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another build laid it out first
        ready.touch()
        return target / "root"

    def materialize(self, mount_ids: list[str]) -> Path:
        """A host directory laid out as the container's filesystem root for these mounts (cached).

        Every file lies at its absolute path below it (/root/app.py at `<dir>/root/app.py`, /data/x.csv at
        `<dir>/data/x.csv`); returns the directory standing for /root, the code's, whose parent is the whole
        tree. A runtime that cannot show files outside /root says so when it starts the container.
        """
        mounts = [self.get(m) for m in mount_ids]
        key = hashlib.sha256(
            "|".join(self.checksum(m) for m in mounts if m.kind != "client").encode()
        ).hexdigest()
        target = self._workdirs / key[:24]
        root = target / "root"
        ready = target.with_name(target.name + ".ready")  # beside the tree: nothing extra inside it
        if ready.exists():
            return root
        tmp = self._workdirs / f"{key[:24]}.{os.getpid()}.{ids.new_secret()[-8:]}"
        (tmp / "root").mkdir(parents=True)
        for mount in mounts:
            for f in mount.files:
                dest = tmp.joinpath(*_relative_parts(f.filename))
                dest.parent.mkdir(parents=True, exist_ok=True)
                self._copy_out(f.sha256_hex, dest, f.mode)
        try:
            os.replace(tmp, target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another start built it first
        ready.touch()
        return root


def _check_sha(value: str) -> str:
    """A sha256 hex digest, checked: the only names a file in the file store can have."""
    if not isinstance(value, str) or not _SHA_RE.fullmatch(value):
        raise InvalidArgument(f"Not a sha256 hex digest: {quoted(value)}")
    return value


def _relative_parts(filename: str) -> list[str]:
    """An absolute mount path's components below '/', without '.', '..' or empty ones."""
    return [p for p in Path(filename).parts if p.strip("/") not in ("", "..", ".")]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
