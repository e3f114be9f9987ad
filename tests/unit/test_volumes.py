"""Volume rules over the in-memory store: uploads, removes, copies and listings; snapshots as hard links; and
what a commit reads from an overlay's upper dir."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from onshore.errors import AlreadyExists, InvalidArgument, NotFound
from onshore.models import VolumeEntry
from onshore.services.clock import FakeClock
from onshore.services.kv import CREATE_EPHEMERAL, CREATE_IF_MISSING, KvService
from onshore.services.volume_mounts import scan_upper
from onshore.services.volume_objects import VolumeObjects
from onshore.services.volumes import FS_V1, FS_V2, VolumeService, clean_path
from onshore.store.memory import memory_store


@pytest.fixture
def volumes(tmp_path: Path) -> VolumeService:
    store = memory_store()
    return VolumeService(store, KvService(store, FakeClock()), VolumeObjects(tmp_path / "volumes"))


def _store(volumes: VolumeService, data: bytes) -> tuple[str, int]:
    """Store data as an object, as a commit stores a container's file."""
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    try:
        return volumes.objects.put_fd(read)
    finally:
        os.close(read)


def _snapshot(volumes: VolumeService, volume_id: str) -> tuple[int, Path]:
    version, entries = volumes.commit_tree(volume_id)
    return version, volumes.objects.snapshot(volume_id, version, entries)


def _put(volumes: VolumeService, volume_id: str, path: str, data: bytes, mode: int = 0o644) -> None:
    sha, size = _store(volumes, data)
    entry = VolumeEntry(path, "file", mode, size, 0.0, sha)
    asyncio.run(volumes.put_files(volume_id, [entry], allow_overwrite=True))


def _paths(volumes: VolumeService, volume_id: str, path: str = "", recursive: bool = True) -> list[str]:
    return [e.path for e in volumes.listing(volume_id, path, recursive)]


def test_identity_versions_and_names(volumes: VolumeService) -> None:
    v1 = volumes.get_or_create("weights", "", CREATE_IF_MISSING, 0)
    assert v1.fs_version == FS_V1 and v1.object_id.startswith("vo-")
    assert volumes.get_or_create("weights", "main", CREATE_IF_MISSING, FS_V2).object_id == v1.object_id
    v2 = volumes.get_or_create("blocks", "", CREATE_IF_MISSING, FS_V2)
    assert v2.fs_version == FS_V2
    with pytest.raises(AlreadyExists):
        volumes.rename(v2.object_id, "weights")
    volumes.rename(v2.object_id, "renamed")
    assert sorted(o.name for o in volumes.list_named("main")) == ["renamed", "weights"]
    ephemeral = volumes.get_or_create("", "", CREATE_EPHEMERAL, 0)
    assert ephemeral.ephemeral and ephemeral.name == ""
    volumes.delete(v1.object_id)
    with pytest.raises(NotFound):
        volumes.get(v1.object_id)


def test_uploads_make_parents_and_refuse_overwrites(volumes: VolumeService) -> None:
    vid = volumes.get_or_create("v", "", CREATE_IF_MISSING, 0).object_id
    _put(volumes, vid, "/a/b/c.txt", b"c")
    assert _paths(volumes, vid) == ["a", "a/b", "a/b/c.txt"]
    assert volumes.version(vid) == 1
    sha, size = _store(volumes, b"new")
    again = VolumeEntry("a/b/c.txt", "file", 0o644, size, 0.0, sha)
    with pytest.raises(AlreadyExists):
        asyncio.run(volumes.put_files(vid, [again], allow_overwrite=False))
    with pytest.raises(InvalidArgument, match="is a directory"):
        asyncio.run(volumes.put_files(vid, [VolumeEntry("a/b", "file", 0o644, size, 0.0, sha)], True))
    assert volumes.version(vid) == 1  # refused uploads change nothing
    with pytest.raises(InvalidArgument, match="is a file"):  # a file, and a file below it, in one batch
        both = [
            VolumeEntry("f", "file", 0o644, size, 0.0, sha),
            VolumeEntry("f/g", "file", 0o644, size, 0.0, sha),
        ]
        asyncio.run(volumes.put_files(vid, both, True))
    with pytest.raises(InvalidArgument, match="is a file"):  # below a file the volume has
        asyncio.run(volumes.put_files(vid, [VolumeEntry("a/b/c.txt/d", "file", 0o644, size, 0.0, sha)], True))
    asyncio.run(volumes.put_files(vid, [VolumeEntry("suid", "file", 0o4755, size, 0.0, sha)], True))
    assert volumes.file(vid, "suid").mode == 0o755  # no setuid bit from an upload
    with pytest.raises(InvalidArgument, match=r"\.\."):
        clean_path("a/../../etc")


def test_listing_removes_and_copies(volumes: VolumeService) -> None:
    vid = volumes.get_or_create("v", "", CREATE_IF_MISSING, FS_V2).object_id
    for path in ("d/one.txt", "d/sub/two.txt", "top.txt"):
        _put(volumes, vid, path, path.encode())
    assert _paths(volumes, vid, "", recursive=False) == ["d", "top.txt"]
    assert _paths(volumes, vid, "d", recursive=False) == ["d/one.txt", "d/sub"]
    assert _paths(volumes, vid, "/top.txt") == ["top.txt"]  # a file: its own entry
    with pytest.raises(NotFound):
        volumes.listing(vid, "nope", False)
    asyncio.run(volumes.copy(vid, ["top.txt"], "d", recursive=False))  # into a directory
    asyncio.run(volumes.copy(vid, ["top.txt"], "renamed.txt", recursive=False))  # to a new name
    with pytest.raises(InvalidArgument, match="recursive"):
        asyncio.run(volumes.copy(vid, ["d"], "e", recursive=False))
    with pytest.raises(InvalidArgument, match="into itself"):
        asyncio.run(volumes.copy(vid, ["d"], "d/inner", recursive=True))
    asyncio.run(volumes.copy(vid, ["d"], "e", recursive=True))
    assert _paths(volumes, vid, "e") == ["e/one.txt", "e/sub", "e/sub/two.txt", "e/top.txt"]
    assert volumes.file(vid, "e/sub/two.txt").object == volumes.file(vid, "d/sub/two.txt").object
    with pytest.raises(InvalidArgument, match="non-empty directory"):
        asyncio.run(volumes.remove(vid, "d", recursive=False))
    asyncio.run(volumes.remove(vid, "d", recursive=True))
    assert _paths(volumes, vid, "", recursive=False) == ["e", "renamed.txt", "top.txt"]
    with pytest.raises(NotFound):
        asyncio.run(volumes.remove(vid, "d", recursive=True))
    asyncio.run(volumes.remove(vid, "/", recursive=True))
    assert _paths(volumes, vid) == []


def test_snapshots_are_hard_links_with_their_modes(volumes: VolumeService) -> None:
    vid = volumes.get_or_create("v", "", CREATE_IF_MISSING, 0).object_id
    _put(volumes, vid, "plain.txt", b"same")
    _put(volumes, vid, "bin/tool", b"same", mode=0o755)
    version, tree = _snapshot(volumes, vid)
    assert version == 2
    plain, tool = tree / "plain.txt", tree / "bin" / "tool"
    sha = volumes.file(vid, "plain.txt").object
    assert plain.stat().st_ino == volumes.objects.path(sha).stat().st_ino  # a link, not a copy
    assert plain.stat().st_mode & 0o777 == 0o644 and tool.stat().st_mode & 0o777 == 0o755
    assert tool.read_bytes() == b"same"
    assert _snapshot(volumes, vid) == (version, tree)  # made once per commit
    volumes.objects.remove_snapshots(vid, keep=set())
    assert not tree.exists()


def test_symlinks_are_followed_for_reads(volumes: VolumeService) -> None:
    vid = volumes.get_or_create("v", "", CREATE_IF_MISSING, 0).object_id
    _put(volumes, vid, "data/real.txt", b"real")
    link = VolumeEntry("data/link", "symlink", 0o777, 8, 0.0, "real.txt")
    asyncio.run(_apply(volumes, vid, [("put", link)]))
    assert volumes.file(vid, "data/link").path == "data/real.txt"
    loop = VolumeEntry("loop", "symlink", 0o777, 4, 0.0, "loop")
    asyncio.run(_apply(volumes, vid, [("put", loop)]))
    with pytest.raises(NotFound, match="symbolic link"):
        volumes.file(vid, "loop")


async def _apply(volumes: VolumeService, vid: str, changes: list[tuple[str, VolumeEntry]]) -> None:
    async with volumes.lock(vid):
        volumes.apply(vid, changes)


@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts are character devices: making one needs root")
def test_a_commit_reads_an_upper_dir(volumes: VolumeService, tmp_path: Path) -> None:
    vid = volumes.get_or_create("v", "", CREATE_IF_MISSING, 0).object_id
    for path in ("keep.txt", "gone.txt", "old/inner.txt"):
        _put(volumes, vid, path, b"before")
    upper = tmp_path / "upper"
    (upper / "new").mkdir(parents=True)
    (upper / "new" / "file.txt").write_bytes(b"new")
    (upper / "keep.txt").write_bytes(b"changed")
    os.mknod(upper / "gone.txt", 0o600 | 0o020000, os.makedev(0, 0))  # deleted
    (upper / "old").mkdir()
    os.setxattr(upper / "old", "trusted.overlay.opaque", b"y")  # replaced: the lower dir's files went
    (upper / "old" / "fresh.txt").write_bytes(b"fresh")
    os.symlink("keep.txt", upper / "alias")
    changes, seen = scan_upper(upper, "", {}, volumes)
    asyncio.run(_apply(volumes, vid, changes))
    assert _paths(volumes, vid) == ["alias", "keep.txt", "new", "new/file.txt", "old", "old/fresh.txt"]
    keep = volumes.file(vid, "keep.txt")
    assert b"".join(volumes.objects.read(keep.object, 0, keep.size)) == b"changed"
    # What was committed is not committed again; a later change is.
    assert scan_upper(upper, "", seen, volumes)[0] == []
    (upper / "keep.txt").write_bytes(b"changed again")
    again, _ = scan_upper(upper, "", seen, volumes)
    assert [(op, e.path) for op, e in again] == [("delete", "keep.txt"), ("put", "keep.txt")]
    # A file the container made, committed, then deleted (the overlay leaves no whiteout for it): deleted.
    (upper / "new" / "file.txt").unlink()
    gone, _ = scan_upper(upper, "", seen, volumes)
    assert ("delete", "new/file.txt") in [(op, e.path) for op, e in gone]
    # Under a sub_path mount, the same upper dir lands below it.
    prefixed, _ = scan_upper(upper, "sub/dir", {}, volumes)
    assert {e.path for _, e in prefixed} >= {"sub/dir/keep.txt", "sub/dir/old/fresh.txt"}


def test_collect_removes_what_no_volume_needs(volumes: VolumeService) -> None:
    import time

    keep = volumes.get_or_create("keep", "", CREATE_IF_MISSING, 0).object_id
    drop = volumes.get_or_create("drop", "", CREATE_IF_MISSING, 0).object_id
    _put(volumes, keep, "k.txt", b"kept")
    _put(volumes, drop, "d.txt", b"dropped")
    _, tree = _snapshot(volumes, drop)
    dropped = volumes.file(drop, "d.txt").object
    volumes.delete(drop)
    assert (
        volumes.collect(time.time(), set()) >= 0 and volumes.objects.path(dropped).is_file()
    )  # too recent to tell
    assert volumes.collect(time.time() + 2 * 24 * 3600, set()) >= 1
    assert not volumes.objects.path(dropped).is_file() and not tree.exists()
    assert volumes.objects.path(volumes.file(keep, "k.txt").object).is_file()
