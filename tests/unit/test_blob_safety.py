"""Blob and mount file safety: strict ids, only regular files read, expiring URLs, blobs written once."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from onshore import ids
from onshore.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from onshore.http.blobs import _write
from onshore.models import MountFile
from onshore.services.blobs import URL_SECONDS, BlobService, parse_blob_id
from onshore.services.clock import FakeClock
from onshore.services.mounts import MountService
from onshore.store.memory import memory_store

BAD_IDS = [
    "../../../../etc/hostname",
    "/etc/hostname",
    "bl-../../../etc/passwd",
    "bl-AAAAAAAAAAAAAAAAAAAAA/",
    "bl-AAAAAAAAAAAAAAAAAAAAAA/../x",
    "bl-AAAAAAAAAAAAAAAAAAAAAA\n",
    "bl-AAAAAAAAAAAAAAAAAAAAA",  # 21 characters
    "parts",
    "",
]


def _service(tmp_path: Path, clock: FakeClock | None = None) -> BlobService:
    return BlobService(tmp_path / "blobs", b"k" * 32, "http://127.0.0.1:1", clock)


def _query(url: str) -> tuple[str, str]:
    query = parse_qs(urlsplit(url).query)
    return query["sig"][0], query["exp"][0]


def _upload(blobs: BlobService, blob_id: str, data: bytes) -> None:
    fd, tmp = blobs.begin_upload(blob_id, None)
    os.write(fd, data)
    os.close(fd)
    blobs.finish_upload(blob_id, None, tmp, hashlib.md5(data).hexdigest())


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_malformed_blob_id_is_refused_before_any_file_is_touched(tmp_path: Path, bad: str) -> None:
    blobs = _service(tmp_path)
    for use in (blobs.read, blobs.open, blobs.delete, blobs.download_url, blobs.exists, parse_blob_id):
        with pytest.raises(InvalidArgument, match="Not a blob id"):
            use(bad)
    with pytest.raises(InvalidArgument):
        blobs.check("get", bad, "0" * 32, str(int(time.time()) + 60))


def test_the_ids_the_server_hands_out_parse(tmp_path: Path) -> None:
    for _ in range(200):
        blob_id = ids.new_id("blob")
        assert parse_blob_id(blob_id) == blob_id


def test_a_symlink_planted_in_the_blob_store_is_not_followed(tmp_path: Path) -> None:
    blobs = _service(tmp_path)
    blob_id = ids.new_id("blob")
    secret = tmp_path / "outside"
    secret.write_text("host secret")
    os.symlink(secret, blobs.path(blob_id))
    with pytest.raises(Conflict, match="symbolic link"):
        blobs.read(blob_id)
    assert not blobs.exists(blob_id)
    with pytest.raises(NotFound):
        blobs.download_url(blob_id)


def test_a_fifo_in_the_blob_store_is_refused_without_blocking(tmp_path: Path) -> None:
    blobs = _service(tmp_path)
    blob_id = ids.new_id("blob")
    os.mkfifo(blobs.path(blob_id))
    started = time.monotonic()
    with pytest.raises(Conflict, match="not a regular file"):
        blobs.read(blob_id)
    assert time.monotonic() - started < 1.0
    assert not blobs.exists(blob_id)


def test_urls_expire_on_the_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    blobs = _service(tmp_path, clock)
    blob_id, url, _ = blobs.create(10)
    assert url is not None
    sig, expires = _query(url)
    blobs.check("put", blob_id, sig, expires)
    clock.advance(URL_SECONDS["put"] - 1)
    blobs.check("put", blob_id, sig, expires)  # still good just before its expiry
    clock.advance(2)
    with pytest.raises(PermissionDenied, match=r"expired at .* upload URLs last 24h"):
        blobs.check("put", blob_id, sig, expires)
    # The expiry is signed: pushing it out does not revive the URL.
    with pytest.raises(PermissionDenied, match="signature"):
        blobs.check("put", blob_id, sig, str(int(expires) + 3600))
    with pytest.raises(PermissionDenied, match="expiry"):
        blobs.check("put", blob_id, sig, "")
    # Crafted values are refused like any bad URL, never a server error.
    with pytest.raises(PermissionDenied, match="expiry"):
        blobs.check("put", blob_id, sig, "\u00b2")  # a digit to str.isdigit, not to int()
    with pytest.raises(PermissionDenied, match="signature"):
        blobs.check("put", blob_id, "\u00e9" * 32, expires)  # compare_digest refuses non-ASCII str


def test_download_urls_last_an_hour(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    blobs = _service(tmp_path, clock)
    blob_id, _, _ = blobs.create(3)
    _upload(blobs, blob_id, b"abc")
    sig, expires = _query(blobs.download_url(blob_id))
    clock.advance(URL_SECONDS["get"] + 1)
    with pytest.raises(PermissionDenied, match="download URLs last 1h"):
        blobs.check("get", blob_id, sig, expires)


def test_a_complete_blob_cannot_be_overwritten(tmp_path: Path) -> None:
    blobs = _service(tmp_path)
    blob_id, _, _ = blobs.create(3)
    _upload(blobs, blob_id, b"abc")
    fd, tmp = blobs.begin_upload(blob_id, None)
    os.write(fd, b"xyz")
    os.close(fd)
    with pytest.raises(Conflict, match="cannot be changed once uploaded"):
        blobs.finish_upload(blob_id, None, tmp, hashlib.md5(b"xyz").hexdigest())
    with pytest.raises(Conflict, match="already complete"):
        blobs.begin_upload(blob_id, 1)
    assert blobs.read(blob_id) == b"abc"
    assert not [p for p in (tmp_path / "blobs").iterdir() if p.name.endswith(".upload")]


def test_a_racing_second_upload_is_refused_unless_it_is_the_same_content(tmp_path: Path) -> None:
    blobs = _service(tmp_path)
    blob_id, _, _ = blobs.create(3)
    first, second, retry = (blobs.begin_upload(blob_id, None) for _ in range(3))
    for (fd, _), data in zip((first, second, retry), (b"abc", b"xyz", b"abc"), strict=True):
        os.write(fd, data)
        os.close(fd)
    blobs.finish_upload(blob_id, None, first[1], hashlib.md5(b"abc").hexdigest())
    with pytest.raises(Conflict):
        blobs.finish_upload(blob_id, None, second[1], hashlib.md5(b"xyz").hexdigest())
    blobs.finish_upload(blob_id, None, retry[1], hashlib.md5(b"abc").hexdigest())  # a client's retry
    assert blobs.read(blob_id) == b"abc"
    assert sorted(p.name for p in (tmp_path / "blobs").iterdir()) == sorted([blob_id, "parts"])


def test_multipart_completion_finalizes_the_blob(tmp_path: Path) -> None:
    blobs = _service(tmp_path)
    blob_id, _, _ = blobs.create(10)
    for n, data in enumerate([b"hello ", b"world"], 1):
        fd, tmp = blobs.begin_upload(blob_id, n)
        os.write(fd, data)
        os.close(fd)
        blobs.finish_upload(blob_id, n, tmp, hashlib.md5(data).hexdigest())
    blobs.assemble(blob_id, [1, 2])
    with pytest.raises(Conflict):
        blobs.assemble(blob_id, [1, 2])
    with pytest.raises(Conflict):
        blobs.begin_upload(blob_id, 1)
    assert blobs.read(blob_id) == b"hello world"


class _Body:
    """A request's body as the blob endpoint reads it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def stream(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


async def test_a_full_disk_during_an_upload_is_a_clear_error(tmp_path: Path) -> None:
    fd = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
    with pytest.raises(ResourceExhausted, match=f"Cannot store the upload in {tmp_path}: No space left"):
        await _write(_Body([b"x" * 1024]), fd, tmp_path / "blob.upload", 1 << 20)  # type: ignore[arg-type]
    with pytest.raises(OSError):
        os.fstat(fd)  # _write closed it


async def test_an_upload_past_its_limit_is_refused(tmp_path: Path) -> None:
    fd, tmp = os.open(tmp_path / "x", os.O_WRONLY | os.O_CREAT), tmp_path / "x"
    with pytest.raises(InvalidArgument, match="larger than 4 bytes"):
        await _write(_Body([b"abc", b"de"]), fd, tmp, 4)  # type: ignore[arg-type]


def _mounts(tmp_path: Path) -> MountService:
    return MountService(memory_store(), tmp_path / "files", tmp_path / "workdirs", FakeClock())


def test_a_symlink_in_the_file_store_is_neither_counted_nor_copied(tmp_path: Path) -> None:
    mounts = _mounts(tmp_path)
    target = tmp_path / "host-file"
    target.write_bytes(b"secret")
    sha = hashlib.sha256(b"secret").hexdigest()
    (tmp_path / "files" / sha[:2]).mkdir()
    os.symlink(target, tmp_path / "files" / sha[:2] / sha)
    assert mounts.missing([sha]) == [sha]  # a link is not a stored file
    with pytest.raises(NotFound):
        mounts.create([MountFile("/root/a.py", sha, 0o644)], "ap-x")
    mounts.put_file(sha, b"secret")  # the upload replaces the link with the file itself
    assert not (tmp_path / "files" / sha[:2] / sha).is_symlink()


def test_stored_mount_files_are_owner_only_and_hash_checked(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        mounts = _mounts(tmp_path)
        data = b"print('hi')\n"
        sha = hashlib.sha256(data).hexdigest()
        mounts.put_file(sha, data)
    finally:
        os.umask(old)
    path = tmp_path / "files" / sha[:2] / sha
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    with pytest.raises(InvalidArgument, match="does not match"):
        mounts.put_file(hashlib.sha256(b"other").hexdigest(), data)
    for bad in ("../" * 4 + "etc/hostname", "A" * 64, sha + "/"):
        with pytest.raises(InvalidArgument, match="Not a sha256"):
            mounts.missing([bad])


@pytest.mark.parametrize("filename", ["/", "/root/x\0y", "//"])
def test_mount_paths_must_name_a_file(tmp_path: Path, filename: str) -> None:
    mounts = _mounts(tmp_path)
    sha = hashlib.sha256(b"x").hexdigest()
    mounts.put_file(sha, b"x")
    with pytest.raises(InvalidArgument, match="name a file"):
        mounts.create([MountFile(filename, sha, 0o644)], "ap-x")
