"""Unpack tar archives safely on every supported Python: tarfile's "data" filter, or the same checks."""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path


def extract_data(archive: tarfile.TarFile, dest: Path) -> None:
    """Unpack `archive` into `dest` as tarfile's "data" filter does.

    Interpreters without extraction filters (Python 3.11 before 3.11.4, Debian 12's among them) get the
    filter's rules applied here: members may not leave `dest` (by their path or through a link), links
    may not be absolute, device and FIFO members are refused, and files keep no set-id bits, no write
    bits for group and others, and no owner from the archive. A refused member raises tarfile.TarError
    before anything is unpacked.
    """
    if hasattr(tarfile, "data_filter"):
        archive.extractall(dest, filter="data")
    else:
        extract_checked(archive, dest)


def extract_checked(archive: tarfile.TarFile, dest: Path) -> None:
    """The "data" filter's rules applied by hand, for interpreters without extraction filters."""
    root = os.path.realpath(dest)
    members = [_checked(member, root) for member in archive.getmembers()]
    archive.extractall(dest, members=members)


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _checked(member: tarfile.TarInfo, root: str) -> tarfile.TarInfo:
    name = member.name.lstrip("/" + os.sep)
    if not name or os.path.isabs(name):
        raise tarfile.TarError(f"{member.name!r}: an absolute path")
    target = os.path.realpath(os.path.join(root, name))
    if not _inside(root, target):
        raise tarfile.TarError(f"{member.name!r} would be unpacked outside the destination")
    if member.ischr() or member.isblk() or member.isfifo():
        raise tarfile.TarError(f"{member.name!r} is a device or FIFO")
    if member.issym():
        if os.path.isabs(member.linkname):
            raise tarfile.TarError(f"{member.name!r} links to an absolute path")
        pointed = os.path.realpath(os.path.join(os.path.dirname(target), member.linkname))
        if not _inside(root, pointed):
            raise tarfile.TarError(f"{member.name!r} links outside the destination")
    elif member.islnk():
        pointed = os.path.realpath(os.path.join(root, member.linkname.lstrip("/" + os.sep)))
        if not _inside(root, pointed):
            raise tarfile.TarError(f"{member.name!r} links outside the destination")
    member.name = name
    mode = member.mode & ~(stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH)
    if member.isreg() or member.islnk():
        mode |= stat.S_IRUSR | stat.S_IWUSR
        if not mode & stat.S_IXUSR:
            mode &= ~(stat.S_IXGRP | stat.S_IXOTH)
    member.mode = mode
    member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
    return member
