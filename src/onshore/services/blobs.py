"""Blobs: large payloads uploaded and downloaded over HTTP with signed URLs, kept on disk."""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from onshore import ids
from onshore.config import private_dir
from onshore.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    quoted,
)
from onshore.services.clock import Clock, SystemClock

MAX_BLOB_BYTES = 64 * 1024**3
# Payloads are kept this long: like Modal's, a spawned call's result can be fetched for a week.
BLOB_TTL_SECONDS = 7 * 24 * 3600
PART_BYTES = 256 * 1024**2  # multipart uploads use parts of this size
MULTIPART_THRESHOLD = 1024**3
# How long a signed URL works. The client asks for a download URL just before it downloads, and for upload
# URLs just before it uploads; a multipart upload of a large file may use its last part URL hours later.
URL_SECONDS = {"get": 3600, "put": 24 * 3600}
# A full disk (or a file size limit): the client is told to free space, not that the server broke.
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_CHUNK = 4 * 1024 * 1024
_EXPIRY_RE = re.compile(r"[0-9]{1,12}")  # ASCII digits only ("²".isdigit() is true)


def parse_blob_id(value: str) -> str:
    """The blob id, checked: 'bl-' and 22 letters or digits, so it can only name a file in the blob store."""
    if not isinstance(value, str) or not ids.is_id("blob", value):
        raise InvalidArgument(f"Not a blob id: {quoted(value)} (blob ids are 'bl-' and 22 letters or digits)")
    return value


def storage_error(what: str, path: Path | str, exc: OSError) -> ResourceExhausted | Unavailable:
    """A one-line error for a failed disk write or read: RESOURCE_EXHAUSTED when the disk is full."""
    message = f"Cannot {what} in {path}: {exc.strerror or exc}"
    return ResourceExhausted(message) if exc.errno in _FULL else Unavailable(message)


def open_regular(path: Path, name: str) -> BinaryIO:
    """Open a stored file for reading, never following a symlink nor blocking on a FIFO or device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"{name} not found") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Conflict(f"{name} is a symbolic link in {path.parent}; refusing to follow it") from None
        raise storage_error(f"read {name}", path.parent, exc) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Conflict(f"{name} in {path.parent} is not a regular file; refusing to read it")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def is_regular(path: Path) -> bool:
    """Whether a regular file (not a symlink, FIFO or directory) lies at path."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def create_private(directory: Path, prefix: str) -> tuple[int, Path]:
    """A new owner-only (0600) temporary file in directory, opened for writing: (fd, path)."""
    path = directory / f".{prefix}.{os.getpid()}.{secrets.token_hex(6)}.upload"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return fd, path


class BlobService:
    def __init__(self, root: Path, key: bytes, public_url: str, clock: Clock | None = None) -> None:
        self._root = root
        private_dir(self._root)
        private_dir(self._root / "parts")
        self._key = key
        self._clock: Clock = clock or SystemClock()
        self.public_url = public_url.rstrip("/")

    # ---------------------------------------------------------------- signing
    def _sig(self, verb: str, blob_id: str, expires: int) -> str:
        text = f"{verb}:{blob_id}:{expires}"
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:32]

    def check(self, verb: str, blob_id: str, sig: str, expires: str) -> None:
        """A URL's blob id, signature and expiry; InvalidArgument or PermissionDenied with the reason."""
        parse_blob_id(blob_id)
        self.check_signed(verb, blob_id, sig, expires)

    def check_signed(self, verb: str, name: str, sig: str, expires: str) -> None:
        """A signed URL's signature and expiry (for a blob, or another resource `name`); PermissionDenied."""
        if not _EXPIRY_RE.fullmatch(expires):
            raise PermissionDenied("Blob URL without a valid expiry: ask the server for a new URL")
        # Compared as bytes: compare_digest refuses str with characters outside ASCII (a crafted URL).
        if not hmac.compare_digest(self._sig(verb, name, int(expires)).encode(), (sig or "").encode()):
            raise PermissionDenied("Bad or missing blob URL signature")
        now = self._clock.now()
        if now > int(expires):
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(expires)))
            raise PermissionDenied(
                f"This blob URL expired at {when} ({now - int(expires):.0f}s ago; "
                f"{'download' if verb == 'get' else 'upload'} URLs last {URL_SECONDS[verb] // 3600}h): "
                "ask the server for a new one"
            )

    def signed_query(self, verb: str, name: str) -> str:
        """The query string ("exp=...&sig=...") that signs a URL of resource `name` for verb."""
        expires = int(self._clock.now()) + URL_SECONDS[verb]
        return f"exp={expires}&sig={self._sig(verb, name, expires)}"

    def url(self, verb: str, blob_id: str, suffix: str = "") -> str:
        return f"{self.public_url}/blobs/{blob_id}{suffix}?{self.signed_query(verb, blob_id)}"

    # ---------------------------------------------------------------- protocol
    def create(self, content_length: int) -> tuple[str, str | None, tuple[int, list[str], str] | None]:
        """A new blob id with an upload URL, or a multipart plan (part size, part URLs, completion URL)."""
        if content_length < 0 or content_length > MAX_BLOB_BYTES:
            raise InvalidArgument(f"Blob size {content_length} is outside 0..{MAX_BLOB_BYTES} bytes")
        blob_id = ids.new_id("blob")
        if content_length > MULTIPART_THRESHOLD:
            parts = (content_length + PART_BYTES - 1) // PART_BYTES
            urls = [self.url("put", blob_id, f"/parts/{n}") for n in range(1, parts + 1)]
            return blob_id, None, (PART_BYTES, urls, self.url("put", blob_id, "/complete"))
        return blob_id, self.url("put", blob_id), None

    def download_url(self, blob_id: str) -> str:
        if not self.exists(blob_id):
            raise NotFound(f"Blob {blob_id} not found")
        return self.url("get", blob_id)

    def path(self, blob_id: str) -> Path:
        return self._root / parse_blob_id(blob_id)

    def part_path(self, blob_id: str, part: int) -> Path:
        return self._root / "parts" / f"{parse_blob_id(blob_id)}.{int(part)}"

    def exists(self, blob_id: str) -> bool:
        """Whether the blob is complete (a regular file in the blob store)."""
        return is_regular(self.path(blob_id))

    def open(self, blob_id: str) -> BinaryIO:
        """The complete blob, open for reading; NotFound, or Conflict where its file is not a regular one."""
        return open_regular(self.path(blob_id), f"Blob {blob_id}")

    def read(self, blob_id: str) -> bytes:
        with self.open(blob_id) as f:
            return f.read()

    # ---------------------------------------------------------------- uploads
    def begin_upload(self, blob_id: str, part: int | None) -> tuple[int, Path]:
        """A private temporary file for an upload's body: (fd, path). A part of a complete blob: Conflict (the
        blob itself may be sent again: finish_upload accepts a retry of the same content only)."""
        if part is not None and self.exists(blob_id):
            raise Conflict(f"Blob {blob_id} is already complete; its parts cannot be replaced")
        folder = self._root if part is None else self._root / "parts"
        try:
            return create_private(folder, blob_id if part is None else f"{blob_id}.{part}")
        except OSError as exc:
            raise storage_error(f"store blob {blob_id}", folder, exc) from None

    def finish_upload(self, blob_id: str, part: int | None, tmp: Path, md5_hex: str) -> None:
        """Publish an uploaded body; the blob itself only once: a second, different upload is a Conflict."""
        try:
            if part is not None:
                if self.exists(blob_id):
                    raise Conflict(f"Blob {blob_id} is already complete; its parts cannot be replaced")
                os.replace(tmp, self.part_path(blob_id, part))
                return
            try:
                os.link(tmp, self.path(blob_id))  # fails where the blob exists: a blob is written once
            except FileExistsError:
                if self._md5(blob_id) != md5_hex:
                    raise Conflict(
                        f"Blob {blob_id} is already complete; a blob cannot be changed once uploaded"
                    ) from None
        except OSError as exc:
            raise storage_error(f"store blob {blob_id}", self._root, exc) from None
        finally:
            tmp.unlink(missing_ok=True)

    def _md5(self, blob_id: str) -> str:
        md5 = hashlib.md5()
        with self.open(blob_id) as f:
            while chunk := f.read(_CHUNK):
                md5.update(chunk)
        return md5.hexdigest()

    def assemble(self, blob_id: str, part_numbers: list[int]) -> str:
        """Join uploaded parts into the blob; returns the multipart ETag (md5 of part md5s, -count)."""
        if not part_numbers:
            raise InvalidArgument(f"The completion of blob {blob_id} names no parts")
        if self.exists(blob_id):
            raise Conflict(f"Blob {blob_id} is already complete")
        fd, tmp = self.begin_upload(blob_id, None)
        digests = []
        try:
            with os.fdopen(fd, "wb") as out:
                for n in part_numbers:
                    md5 = hashlib.md5()
                    try:
                        part = open_regular(self.part_path(blob_id, n), f"Part {n} of blob {blob_id}")
                    except NotFound:
                        raise InvalidArgument(f"Part {n} of blob {blob_id} was never uploaded") from None
                    with part:
                        while chunk := part.read(_CHUNK):
                            md5.update(chunk)
                            out.write(chunk)
                    digests.append(md5.digest())
            os.link(tmp, self.path(blob_id))
        except FileExistsError:
            raise Conflict(f"Blob {blob_id} is already complete") from None
        except OSError as exc:
            raise storage_error(f"assemble blob {blob_id}", self._root, exc) from None
        finally:
            tmp.unlink(missing_ok=True)
        for n in part_numbers:
            self.part_path(blob_id, n).unlink(missing_ok=True)
        return hashlib.md5(b"".join(digests)).hexdigest() + f"-{len(digests)}"

    def delete(self, blob_id: str) -> None:
        self.path(blob_id).unlink(missing_ok=True)

    def collect_garbage(self, now: float, max_age: float = BLOB_TTL_SECONDS) -> int:
        """Delete blobs (and abandoned parts and uploads) last written more than max_age seconds ago."""
        removed = 0
        for folder in (self._root, self._root / "parts"):
            for entry in os.scandir(folder):
                if entry.is_dir(follow_symlinks=False):
                    continue
                if now - entry.stat(follow_symlinks=False).st_mtime > max_age:
                    os.unlink(entry.path)
                    removed += 1
        return removed


def copy_stream(read: Callable[[int], bytes], fd: int, limit: int, name: str) -> tuple[str, str, int]:
    """Copy a reader into an fd, up to limit bytes: (md5 hex, sha256 hex, size)."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    while chunk := read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise InvalidArgument(f"{name} is larger than {limit} bytes")
        md5.update(chunk)
        sha.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
    return md5.hexdigest(), sha.hexdigest(), size
