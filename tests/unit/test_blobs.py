"""Blob storage: signed URLs, multipart assembly, and expiry of old payloads."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from onshore.errors import PermissionDenied
from onshore.services.blobs import BLOB_TTL_SECONDS, BlobService


def test_signatures_are_checked_per_verb(tmp_path: Path) -> None:
    blobs = BlobService(tmp_path, b"k" * 32, "http://127.0.0.1:1")
    blob_id, url, multipart = blobs.create(10)
    assert url is not None and multipart is None
    query = parse_qs(urlsplit(url).query)
    sig, expires = query["sig"][0], query["exp"][0]
    blobs.check("put", blob_id, sig, expires)
    with pytest.raises(PermissionDenied):
        blobs.check("get", blob_id, sig, expires)  # an upload URL does not grant a download


def test_multipart_parts_are_joined_with_an_s3_style_etag(tmp_path: Path) -> None:
    blobs = BlobService(tmp_path, b"k" * 32, "http://127.0.0.1:1")
    blob_id, _, _ = blobs.create(10)
    parts = [b"hello ", b"world"]
    for n, data in enumerate(parts, 1):
        blobs.part_path(blob_id, n).write_bytes(data)
    etag = blobs.assemble(blob_id, [1, 2])
    assert blobs.read(blob_id) == b"hello world"
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-2"
    assert etag == expected


def test_expired_blobs_are_deleted_and_fresh_ones_kept(tmp_path: Path) -> None:
    blobs = BlobService(tmp_path, b"k" * 32, "http://127.0.0.1:1")
    old_id, _, _ = blobs.create(3)
    new_id, _, _ = blobs.create(3)
    blobs.path(old_id).write_bytes(b"old")
    blobs.path(new_id).write_bytes(b"new")
    week_ago = time.time() - BLOB_TTL_SECONDS - 60
    os.utime(blobs.path(old_id), (week_ago, week_ago))
    assert blobs.collect_garbage(time.time()) == 1
    assert not blobs.path(old_id).exists()
    assert blobs.read(new_id) == b"new"
