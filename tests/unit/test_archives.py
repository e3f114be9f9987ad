"""Tar archives unpack safely: tarfile's "data" filter, or (older interpreters) the same checks by hand."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from onshore.archives import extract_checked, extract_data

Extract = Callable[[tarfile.TarFile, Path], None]
WAYS = [pytest.param(extract_data, id="extract_data"), pytest.param(extract_checked, id="by_hand")]


def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, b""


def _unpack(extract: Extract, tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    dest = tmp_path / "dest"
    dest.mkdir(exist_ok=True)
    with tarfile.open(_archive(tmp_path / "a.tar", members)) as archive:
        extract(archive, dest)
    return dest


@pytest.mark.parametrize("extract", WAYS)
def test_plain_files_dirs_and_inner_links_unpack(extract: Extract, tmp_path: Path) -> None:
    dir_info = tarfile.TarInfo("pkg")
    dir_info.type, dir_info.mode = tarfile.DIRTYPE, 0o755
    dest = _unpack(
        extract,
        tmp_path,
        [
            (dir_info, b""),
            _file("pkg/run.sh", b"#!/bin/sh\n", 0o755),
            _file("/abs.txt", b"leading slash dropped"),
            _link("pkg/alias", "run.sh"),
            _link("pkg/hard", "abs.txt", tarfile.LNKTYPE),
        ],
    )
    assert (dest / "pkg" / "run.sh").read_bytes() == b"#!/bin/sh\n"
    assert os.access(dest / "pkg" / "run.sh", os.X_OK)
    assert (dest / "abs.txt").read_bytes() == b"leading slash dropped"
    assert os.readlink(dest / "pkg" / "alias") == "run.sh"
    assert (dest / "pkg" / "hard").read_bytes() == b"leading slash dropped"


@pytest.mark.parametrize("extract", WAYS)
def test_set_id_and_group_or_other_write_bits_are_dropped(extract: Extract, tmp_path: Path) -> None:
    dest = _unpack(extract, tmp_path, [_file("tool", b"x", 0o6777)])
    mode = stat.S_IMODE((dest / "tool").stat().st_mode)
    assert mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWGRP | stat.S_IWOTH) == 0
    assert mode & stat.S_IRWXU == stat.S_IRWXU


@pytest.mark.parametrize(
    "member",
    [
        pytest.param(_file("../escape.txt"), id="dotdot"),
        pytest.param(_file("a/../../escape.txt"), id="inner-dotdot"),
        pytest.param(_link("evil", "/etc/passwd"), id="absolute-symlink"),
        pytest.param(_link("evil", "../../outside"), id="escaping-symlink"),
        pytest.param(_link("evil", "../outside", tarfile.LNKTYPE), id="escaping-hardlink"),
        pytest.param(_special("dev", tarfile.CHRTYPE), id="device"),
        pytest.param(_special("fifo", tarfile.FIFOTYPE), id="fifo"),
    ],
)
@pytest.mark.parametrize("extract", WAYS)
def test_members_that_would_leave_the_destination_or_make_devices_are_refused(
    extract: Extract, member: tuple[tarfile.TarInfo, bytes], tmp_path: Path
) -> None:
    with pytest.raises(tarfile.TarError):
        _unpack(extract, tmp_path, [_file("fine.txt"), member])
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "outside").exists()
