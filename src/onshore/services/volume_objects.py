"""Volume contents on disk: content-addressed objects, uploaded blocks, and read-only snapshot trees.

An object is a file's content, named by its sha256 and never changed once stored (written to a temporary
name, synced, then renamed: a crash leaves either the whole object or none). A snapshot is one commit of a
volume laid out as a directory tree whose files are hard links to objects: it costs a link per file, not a
copy, and containers see it through an overlay, so their writes never reach it. Objects of a mode other
than 0644 get a copy of their own (a hard link shares its permission bits).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from onshore.config import private_dir
from onshore.errors import InvalidArgument, NotFound
from onshore.models import VolumeEntry
from onshore.services.blobs import create_private, storage_error

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_CHUNK = 4 * 1024 * 1024
DEFAULT_MODE = 0o644


def check_sha(value: str) -> str:
    if not _SHA_RE.fullmatch(value):
        raise InvalidArgument(f"Not a sha256 hex digest: {value[:80]!r}")
    return value


class VolumeObjects:
    def __init__(self, root: Path) -> None:
        self.root = root
        # Taken around "is the object there? then mark it used" and around the collector's "unused? then
        # delete", so an object is never deleted between a commit finding it and naming it.
        self._claim = threading.Lock()
        for sub in ("objects", "blocks", "snapshots", "mounts"):
            private_dir(root / sub)

    # ---------------------------------------------------------------- objects
    def path(self, sha: str, mode: int = DEFAULT_MODE) -> Path:
        base = self.root / "objects" / check_sha(sha)[:2] / sha
        mode &= 0o7777
        return base if mode == DEFAULT_MODE else base.with_name(f"{sha}.{mode:o}")

    def claim(self, sha: str) -> bool:
        """Whether the object is stored, marking it used so the collector spares it."""
        with self._claim:
            if not self.path(sha).is_file():
                return False
            os.utime(self.path(sha))
            return True

    def _new_file(self, folder: str, what: str) -> tuple[int, Path]:
        """A new owner-only temporary file in objects/ or blocks/: (fd, path)."""
        try:
            return create_private(self.root / folder, folder)
        except OSError as exc:
            raise storage_error(f"store a volume {what}", self.root / folder, exc) from None

    def _store(self, write: Callable[[int], str], expected: str = "") -> str:
        """Store an object written by write(fd), which returns its sha256: atomically, synced to disk.
        ResourceExhausted on a full disk."""
        folder = self.root / "objects"
        fd, tmp = self._new_file("objects", "file")
        try:
            try:
                sha = write(fd)
                os.fsync(fd)
            finally:
                os.close(fd)
            if expected and sha != expected:
                raise InvalidArgument(f"File content does not match its sha256 {expected}")
            dest = self.path(sha)
            with self._claim:
                if dest.is_file():
                    os.utime(dest)  # in use again: the collector spares what was touched lately
                else:
                    dest.parent.mkdir(exist_ok=True)
                    os.chmod(tmp, DEFAULT_MODE)
                    os.replace(tmp, dest)
                    _sync_dir(dest.parent)  # the name too survives a power loss, not only the bytes
            return sha
        except OSError as exc:
            raise storage_error("store a volume file", folder, exc) from None
        finally:
            tmp.unlink(missing_ok=True)

    def put_fd(self, source: int) -> tuple[str, int]:
        """Store a copy of an open file (a container's changed file): (sha256, size). The copy is what gets
        hashed, so a file still being written is stored as it was read, never torn."""
        size = 0

        def write(fd: int) -> str:
            nonlocal size
            sha = hashlib.sha256()
            while chunk := os.read(source, _CHUNK):
                sha.update(chunk)
                size += len(chunk)
                _write_all(fd, chunk)
            return sha.hexdigest()

        return self._store(write), size

    def adopt(self, source: Path, sha: str) -> None:
        """Take a stored file whose content is known to hash to sha (a mount file): a hard link where it
        can be one, else a copy."""
        dest = self.path(sha)
        with self._claim:
            if dest.is_file():
                os.utime(dest)
                return
        try:
            dest.parent.mkdir(exist_ok=True)
            tmp = dest.with_name(f".{sha}.{os.getpid()}.{os.urandom(4).hex()}.link")
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            os.chmod(tmp, DEFAULT_MODE)
            os.replace(tmp, dest)
            _sync_dir(dest.parent)
        except FileNotFoundError:
            raise NotFound(f"Uploaded file {sha} not found") from None
        except OSError as exc:
            raise storage_error("store a volume file", dest.parent, exc) from None

    def variant(self, sha: str, mode: int) -> Path:
        """The object with these permission bits, made (a copy) when first asked for."""
        path = self.path(sha, mode)
        if path.is_file():
            return path
        base = self.path(sha)
        if not base.is_file():
            raise NotFound(f"Volume file content {sha} is missing from {base.parent}")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.copy")
        try:
            shutil.copyfile(base, tmp)
            os.chmod(tmp, mode & 0o7777)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise storage_error("store a volume file", path.parent, exc) from None
        return path

    def read(self, sha: str, start: int, length: int) -> Iterable[bytes]:
        path = self.path(sha)
        try:
            src = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise NotFound(f"Volume file content {sha} is missing") from None
        with src:
            src.seek(start)
            left = length
            while left > 0 and (chunk := src.read(min(_CHUNK, left))):
                left -= len(chunk)
                yield chunk

    def remove_unused(self, used: set[str], before: float) -> int:
        """Delete objects (and their variants) no volume names, last stored or reused before `before` (a
        commit stores its objects before it names them); the number removed."""
        gone = 0
        for folder in (self.root / "objects").iterdir():
            if not folder.is_dir():
                continue
            for item in folder.iterdir():
                sha = item.name.split(".", 1)[0]
                if sha in used or item.name.startswith("."):
                    continue
                with self._claim:
                    try:
                        fresh = self.path(sha).stat().st_mtime >= before  # variants go with their object
                    except FileNotFoundError:
                        fresh = False
                    if not fresh:
                        item.unlink(missing_ok=True)
                        gone += 1
        return gone

    def remove_stale(self, keep_volume: Callable[[str], bool], before: float) -> int:
        """Delete the snapshots of volumes keep_volume says are gone (asked for each one just before), and
        uploaded blocks and temporary files older than `before`; the number removed."""
        gone = 0
        for folder in (self.root / "snapshots").iterdir():
            if not keep_volume(folder.name):
                remove_tree(folder)
                gone += 1
        for folder in (self.root / "blocks", self.root / "objects"):
            for item in folder.iterdir():
                if item.is_file() and (folder.name == "blocks" or item.name.startswith(".")):
                    with self._claim, contextlib.suppress(FileNotFoundError):
                        if item.stat().st_mtime < before:
                            item.unlink()
                            gone += 1
        return gone

    # ---------------------------------------------------------------- blocks (VolumeFS v2 uploads)
    def block_path(self, sha: str) -> Path:
        return self.root / "blocks" / check_sha(sha)

    def has_block(self, sha: str) -> bool:
        """Whether a block is stored (an uploaded block, or an object with that hash), marking it used so the
        collector spares it until the upload that counts on it is done."""
        with self._claim:
            path = self.block_path(sha)
            if path.is_file():
                os.utime(path)
                return True
        return self.claim(sha)

    def open_block(self) -> tuple[int, Path]:
        """A new temporary file for an uploaded block: (fd, path); finish_block names it."""
        return self._new_file("blocks", "block")

    def finish_block(self, sha: str, tmp: Path, digest: str) -> None:
        """Keep an uploaded block (not synced: blocks are temporary, the file made of them is), if its
        content hashed to its name; the temporary file goes either way."""
        try:
            if digest != check_sha(sha):
                raise InvalidArgument(f"Block content does not match its sha256 {sha}")
            os.replace(tmp, self.block_path(sha))
        except OSError as exc:
            raise storage_error("store a volume block", tmp.parent, exc) from None
        finally:
            tmp.unlink(missing_ok=True)

    def put_concat(self, key: str, blocks: list[str], size: int, block_size: int) -> None:
        """Store the object `key` made of uploaded blocks: block i at offset i * block_size (the client
        leaves out a block's trailing zero bytes, which the gaps then hold), the whole `size` bytes long.
        Copied in the kernel, never read through Python."""
        folder = self.root / "objects"
        fd, tmp = self._new_file("objects", "file")
        try:
            try:
                for index, sha in enumerate(blocks):
                    path = self.block_path(sha)
                    if not path.is_file():
                        path = self.path(sha)
                    with open(path, "rb") as src:
                        left = os.fstat(src.fileno()).st_size
                        if left > block_size:
                            raise InvalidArgument(f"Block {index} is longer than {block_size} bytes")
                        offset = index * block_size
                        while left > 0:
                            copied = os.copy_file_range(src.fileno(), fd, left, offset_dst=offset)
                            if copied == 0:
                                break
                            left -= copied
                            offset += copied
                os.ftruncate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)
            dest = self.path(key)
            with self._claim:
                dest.parent.mkdir(exist_ok=True)
                os.chmod(tmp, DEFAULT_MODE)
                os.replace(tmp, dest)
            _sync_dir(dest.parent)
        except FileNotFoundError as exc:
            raise NotFound(f"An uploaded block is missing ({exc.filename}): upload the file again") from None
        except OSError as exc:
            raise storage_error("store a volume file", folder, exc) from None
        finally:
            tmp.unlink(missing_ok=True)

    # ---------------------------------------------------------------- snapshots
    def snapshot(self, volume_id: str, version: int, entries: list[VolumeEntry]) -> Path:
        """The tree of one commit (made once, then shared by every container that mounts it)."""
        dest = self.root / "snapshots" / volume_id / str(version)
        if dest.is_dir():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{version}.{os.getpid()}.{os.urandom(4).hex()}")
        try:
            tmp.mkdir(mode=0o755)
            for entry in entries:
                target = tmp / entry.path
                if entry.kind == "dir":
                    target.mkdir(mode=entry.mode & 0o7777 or 0o755, exist_ok=True)
                    os.chmod(target, entry.mode & 0o7777 or 0o755)
                elif entry.kind == "symlink":
                    os.symlink(entry.object, target)
                else:
                    self._link(entry, target)
            os.rename(tmp, dest)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and dest.is_dir():
                return dest  # another thread laid out the same commit first
            raise storage_error(f"lay out volume {volume_id}", dest.parent, exc) from None
        finally:
            if tmp.exists():
                remove_tree(tmp)
        return dest

    def _link(self, entry: VolumeEntry, target: Path) -> None:
        source = self.variant(entry.object, entry.mode)
        try:
            os.link(source, target)
        except OSError as exc:
            if exc.errno != errno.EMLINK:  # an inode has at most so many links: copy past that
                raise
            shutil.copy2(source, target)

    def remove_snapshots(self, volume_id: str, keep: set[int]) -> None:
        """Remove the volume's snapshots but those of the commits in keep (and those still being laid out)."""
        folder = self.root / "snapshots" / volume_id
        if not folder.is_dir():
            return
        for item in folder.iterdir():
            if item.name.isdigit() and int(item.name) not in keep:
                remove_tree(item)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view) :]


def remove_tree(path: Path) -> None:
    """Remove a tree, including the mode-0 directories an overlay's work dir leaves behind."""

    def retry(func: Callable[..., object], failed: str, _exc: object) -> None:
        parent = os.path.dirname(failed)
        try:
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, stat.S_IRWXU)
            func(failed)
        except OSError:
            pass

    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, onerror=retry)
