"""python-build-standalone mounts: mount names, asset URLs, fetching from a file:// mirror, and failures."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import stat
import tarfile
from pathlib import Path

import pytest
from grpclib.const import Status
from modal.mount import PYTHON_STANDALONE_VERSIONS, python_standalone_mount_name

from onshore.api.base import status_for
from onshore.errors import InvalidArgument, Unimplemented
from onshore.services.clock import FakeClock
from onshore.services.mounts import MountService
from onshore.services.standalone import (
    DEFAULT_MIRROR,
    MIRROR_ENV,
    StandalonePythons,
    StandaloneUnavailable,
    asset_url,
    mirror_base,
    parse_checksums,
    parse_name,
    tree_files,
)
from onshore.store.sqlite import SqliteStore

NAME = "python-build-standalone.20230826.3.11.5-gnu"
ASSET = "cpython-3.11.5+20230826-x86_64-unknown-linux-gnu-install_only.tar.gz"


def test_names_the_client_asks_for() -> None:
    dist = parse_name(NAME, "x86_64")
    assert (dist.release, dist.version, dist.freethreaded, dist.arch) == (
        "20230826",
        "3.11.5",
        False,
        "x86_64",
    )
    assert dist.asset == ASSET
    assert parse_name(NAME, "arm64").asset == ASSET.replace("x86_64", "aarch64")
    free = parse_name("python-build-standalone.20251209.3.14.2t-gnu", "aarch64")
    assert free.asset == "cpython-3.14.2+20251209-aarch64-unknown-linux-gnu-freethreaded-install_only.tar.gz"
    # Every name the installed client can ask for parses.
    for builder_version, versions in PYTHON_STANDALONE_VERSIONS.items():
        for series, (release, full) in versions.items():
            dist = parse_name(python_standalone_mount_name(series, builder_version), "x86_64")
            assert (dist.release, dist.version + ("t" if dist.freethreaded else "")) == (release, full)


def test_names_refused() -> None:
    with pytest.raises(InvalidArgument, match="not a python-build-standalone mount name"):
        parse_name("python-build-standalone.latest-gnu", "x86_64")
    with pytest.raises(InvalidArgument, match="only glibc builds"):
        parse_name("python-build-standalone.20230826.3.11.5-musl", "x86_64")
    with pytest.raises(Unimplemented, match="this host is riscv64"):
        parse_name(NAME, "riscv64")


def test_urls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    assert mirror_base() == DEFAULT_MIRROR
    assert asset_url(mirror_base(), "20230826", ASSET) == (
        "https://github.com/astral-sh/python-build-standalone/releases/download/20230826/"
        "cpython-3.11.5%2B20230826-x86_64-unknown-linux-gnu-install_only.tar.gz"
    )
    monkeypatch.setenv(MIRROR_ENV, "https://mirror.example/pbs/")
    assert (
        asset_url(mirror_base(), "20230826", "SHA256SUMS") == "https://mirror.example/pbs/20230826/SHA256SUMS"
    )
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path))  # a plain path: a file:// directory
    assert mirror_base() == tmp_path.as_uri()
    assert mirror_base(f"file://{tmp_path}") == f"file://{tmp_path}"


def test_checksum_files() -> None:
    digest = "ab" * 32
    other = ASSET.replace("install_only.tar.gz", "debug-full.tar.zst")
    sums = f"{'cd' * 32}  {other}\n{digest}  {ASSET}\n"
    assert parse_checksums(sums, ASSET) == digest
    assert parse_checksums(f"{digest} *{ASSET}\n", ASSET) == digest
    assert parse_checksums(f"{digest}\n", ASSET) == digest  # a .sha256 file with the digest alone
    assert parse_checksums(f"{digest}  other.tar.gz\n", ASSET) == ""


def test_tree_files_follow_links_inside_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "python"
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "pkg").mkdir(parents=True)
    (root / "bin" / "python3.11").write_text("interpreter")
    (root / "bin" / "python3").symlink_to("python3.11")
    (root / "lib" / "pkg" / "mod.py").write_text("m = 1")
    (root / "lib" / "alias").symlink_to("pkg")  # a directory link: its files appear under it too
    (root / "lib" / "pkg" / "loop").symlink_to("..")  # a loop: left out
    (root / "bin" / "outside").symlink_to(tmp_path)  # leaves the tree: left out
    (root / "bin" / "dangling").symlink_to("nothing")
    found = {rel: path.read_text() for rel, path in tree_files(root)}
    assert found == {
        "bin/python3": "interpreter",
        "bin/python3.11": "interpreter",
        "lib/alias/mod.py": "m = 1",
        "lib/pkg/mod.py": "m = 1",
    }


def _tarball() -> bytes:
    """A small install_only-shaped tarball: an executable, a symlink to it, a module."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, data, mode in [
            ("python/bin/python3.11", b"#!/bin/sh\necho hi\n", 0o755),
            ("python/lib/x.py", b"x = 1\n", 0o644),
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("python/bin/python3")
        link.type, link.linkname = tarfile.SYMTYPE, "python3.11"
        archive.addfile(link)
    return buf.getvalue()


def _mirror(root: Path, data: bytes, sums: str | None) -> Path:
    (root / "20230826").mkdir(parents=True)
    (root / "20230826" / ASSET).write_bytes(data)
    if sums is not None:
        (root / "20230826" / "SHA256SUMS").write_text(sums)
    return root


def _provider(tmp_path: Path, mirror: Path | str) -> tuple[StandalonePythons, MountService]:
    mounts = MountService(
        SqliteStore(tmp_path / "db"), tmp_path / "files", tmp_path / "workdirs", FakeClock()
    )
    return StandalonePythons(mounts, tmp_path / "cache", str(mirror), "x86_64"), mounts


async def test_fetched_verified_unpacked_and_kept(tmp_path: Path) -> None:
    data = _tarball()
    mirror = _mirror(tmp_path / "mirror", data, f"{hashlib.sha256(data).hexdigest()}  {ASSET}\n")
    provider, mounts = _provider(tmp_path, mirror)
    mount = await provider.mount(NAME, 1)
    assert mount.deployment_name == NAME and mount.namespace == 1
    modes = {f.filename: f.mode for f in mount.files}
    assert modes == {"/python/bin/python3": 0o755, "/python/bin/python3.11": 0o755, "/python/lib/x.py": 0o644}
    assert await provider.mount(NAME) is mount
    # What an image build's COPY sees: regular files, the link a copy of its target, modes kept.
    tree = mounts.materialize_tree(mount.mount_id)
    python3 = tree / "python" / "bin" / "python3"
    assert not python3.is_symlink() and python3.read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE(python3.stat().st_mode) == 0o755
    # A restarted server finds the same mount without the mirror; no unpacked leftovers in the cache.
    for path in sorted(mirror.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    again, _ = _provider(tmp_path, mirror)
    assert (await again.mount(NAME)).mount_id == mount.mount_id
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["20230826", f"{NAME}.json"]


async def test_without_published_checksums_it_is_used_unverified(tmp_path: Path) -> None:
    provider, _ = _provider(tmp_path, _mirror(tmp_path / "mirror", _tarball(), None))
    assert len((await provider.mount(NAME)).files) == 3


async def test_missing_asset_names_the_mount_url_and_setting(tmp_path: Path) -> None:
    (tmp_path / "mirror").mkdir()
    provider, _ = _provider(tmp_path, tmp_path / "mirror")
    with pytest.raises(StandaloneUnavailable) as info:
        await provider.mount(NAME)
    message = str(info.value)
    url = f"{(tmp_path / 'mirror').as_uri()}/20230826/{ASSET.replace('+', '%2B')}"
    assert f"Mount '{NAME}'" in message and f"no such release asset at {url}." in message, message
    assert MIRROR_ENV in message and DEFAULT_MIRROR in message, message
    assert status_for(info.value) == Status.NOT_FOUND
    assert not (tmp_path / "cache" / "20230826" / ASSET).exists()


async def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    provider, _ = _provider(tmp_path, _mirror(tmp_path / "mirror", _tarball(), f"{'0' * 64}  {ASSET}\n"))
    with pytest.raises(StandaloneUnavailable, match=f"is not the {'0' * 64} that file://"):
        await provider.mount(NAME)
    assert os.listdir(tmp_path / "cache" / "20230826") == []  # nothing kept


async def test_unreachable_mirror(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    provider, _ = _provider(tmp_path, f"http://127.0.0.1:{port}/pbs")
    with pytest.raises(
        StandaloneUnavailable, match=rf"could not be fetched \(.*\) from http://127.0.0.1:{port}/pbs/"
    ):
        await provider.mount(NAME)


async def test_corrupt_tarball_is_dropped_from_the_cache(tmp_path: Path) -> None:
    provider, _ = _provider(tmp_path, _mirror(tmp_path / "mirror", b"not a tarball", None))
    with pytest.raises(StandaloneUnavailable, match=f"{re.escape(ASSET)} is not a usable"):
        await provider.mount(NAME)
    assert not (tmp_path / "cache" / "20230826" / ASSET).exists()  # fetched again on the next try
