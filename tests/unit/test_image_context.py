"""COPY/ADD semantics of layer builds: where context files land in a layer dir, and what is refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from onshore.images.context import assemble, copy_into
from onshore.images.model import BuildFailed


def _context(tmp_path: Path) -> Path:
    files = {"/.requirements.txt": b"six\n", "app/main.py": b"print(1)\n", "app/util.py": b"x = 1\n"}
    tree = tmp_path / "tree"
    (tree / "root" / "pkg").mkdir(parents=True)
    (tree / "root" / "pkg" / "mod.py").write_text("m = 1\n")
    return assemble(tmp_path / "ctx", files, tree)


def test_copy_file_dir_glob_and_dot(tmp_path: Path) -> None:
    ctx, upper = _context(tmp_path), tmp_path / "upper"
    assert copy_into(upper, ctx, ["/.requirements.txt"], "/.requirements.txt", "/") == ["/.requirements.txt"]
    assert (upper / ".requirements.txt").read_text() == "six\n"
    copy_into(upper, ctx, ["app"], "/srv/app", "/")
    assert sorted(p.name for p in (upper / "srv" / "app").iterdir()) == ["main.py", "util.py"]
    copy_into(upper, ctx, ["app/*.py"], "/glob/", "/")
    assert sorted(p.name for p in (upper / "glob").iterdir()) == ["main.py", "util.py"]
    copy_into(upper, ctx, ["app/main.py"], "rel.py", "/work")  # relative to WORKDIR
    assert (upper / "work" / "rel.py").read_text() == "print(1)\n"
    copy_into(upper, ctx, ["."], "/", "/")  # add_local_*(copy=True): the whole context at /
    assert (upper / "root" / "pkg" / "mod.py").read_text() == "m = 1\n"


def test_chmod_and_add_extracts_tarballs(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b"inside"
        info = tarfile.TarInfo("folder/inner.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    ctx = assemble(tmp_path / "ctx", {"bundle.tgz": buffer.getvalue(), "run.sh": b"#!/bin/sh\n"}, None)
    upper = tmp_path / "upper"
    copy_into(upper, ctx, ["bundle.tgz"], "/opt/", "/", add=True)
    assert (upper / "opt" / "folder" / "inner.txt").read_text() == "inside"
    copy_into(upper, ctx, ["run.sh"], "/usr/local/bin/run.sh", "/", chmod="755")
    assert (upper / "usr" / "local" / "bin" / "run.sh").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize(
    ("sources", "add", "message"),
    [
        (["missing.txt"], False, "no such file in the build context"),
        (["../../etc/passwd"], False, "outside the build context"),
        (["https://example.com/x.tar"], True, "downloading files in ADD is not supported"),
    ],
)
def test_refusals(tmp_path: Path, sources: list[str], add: bool, message: str) -> None:
    ctx = _context(tmp_path)
    with pytest.raises(BuildFailed, match=message):
        copy_into(tmp_path / "upper", ctx, sources, "/x", "/", add=add)


def test_no_context_at_all(tmp_path: Path) -> None:
    with pytest.raises(BuildFailed, match="no such file"):
        copy_into(tmp_path / "upper", None, ["data.txt"], "/a.txt", "/")
