"""Blobs: large payloads uploaded and downloaded over HTTP with signed URLs, kept on disk."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path

from onshore import ids
from onshore.errors import InvalidArgument, NotFound, PermissionDenied

MAX_BLOB_BYTES = 64 * 1024**3
# Payloads are kept this long: like Modal's, a spawned call's result can be fetched for a week.
BLOB_TTL_SECONDS = 7 * 24 * 3600
PART_BYTES = 256 * 1024**2  # multipart uploads use parts of this size
MULTIPART_THRESHOLD = 1024**3
_BLOB_ID_RE = re.compile(r"^bl-[A-Za-z0-9]{22}$")


class BlobService:
    def __init__(self, root: Path, key: bytes, public_url: str) -> None:
        self._root = root
        self._root.mkdir(parents=True, exist_ok=True)
        (self._root / "parts").mkdir(exist_ok=True)
        self._key = key
        self.public_url = public_url.rstrip("/")

    # ---------------------------------------------------------------- signing
    def _sig(self, verb: str, blob_id: str) -> str:
        return hmac.new(self._key, f"{verb}:{blob_id}".encode(), hashlib.sha256).hexdigest()[:32]

    def check(self, verb: str, blob_id: str, sig: str) -> None:
        if not _BLOB_ID_RE.match(blob_id):
            raise NotFound(f"Blob {blob_id!r} not found")
        if not hmac.compare_digest(self._sig(verb, blob_id), sig or ""):
            raise PermissionDenied("Bad or missing blob URL signature")

    def url(self, verb: str, blob_id: str, suffix: str = "") -> str:
        return f"{self.public_url}/blobs/{blob_id}{suffix}?sig={self._sig(verb, blob_id)}"

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
        if not _BLOB_ID_RE.match(blob_id) or not self.path(blob_id).exists():
            raise NotFound(f"Blob {blob_id} not found")
        return self.url("get", blob_id)

    def path(self, blob_id: str) -> Path:
        return self._root / blob_id

    def part_path(self, blob_id: str, part: int) -> Path:
        return self._root / "parts" / f"{blob_id}.{part}"

    def read(self, blob_id: str) -> bytes:
        try:
            return self.path(blob_id).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"Blob {blob_id} not found") from None

    def assemble(self, blob_id: str, part_numbers: list[int]) -> str:
        """Join uploaded parts into the blob; returns the multipart ETag (md5 of part md5s, -count)."""
        digests = []
        tmp = self.path(blob_id).with_suffix(".tmp")
        with tmp.open("wb") as out:
            for n in part_numbers:
                part = self.part_path(blob_id, n)
                if not part.exists():
                    raise InvalidArgument(f"Part {n} of blob {blob_id} was never uploaded")
                md5 = hashlib.md5()
                with part.open("rb") as f:
                    while chunk := f.read(8 * 1024 * 1024):
                        md5.update(chunk)
                        out.write(chunk)
                digests.append(md5.digest())
        os.replace(tmp, self.path(blob_id))
        for n in part_numbers:
            self.part_path(blob_id, n).unlink(missing_ok=True)
        return hashlib.md5(b"".join(digests)).hexdigest() + f"-{len(digests)}"

    def delete(self, blob_id: str) -> None:
        if _BLOB_ID_RE.match(blob_id):
            self.path(blob_id).unlink(missing_ok=True)

    def collect_garbage(self, now: float, max_age: float = BLOB_TTL_SECONDS) -> int:
        """Delete blobs (and abandoned multipart parts) last written more than max_age seconds ago."""
        removed = 0
        for folder in (self._root, self._root / "parts"):
            for entry in os.scandir(folder):
                if entry.is_file() and now - entry.stat().st_mtime > max_age:
                    os.unlink(entry.path)
                    removed += 1
        return removed
