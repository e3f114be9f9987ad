"""merge_layers: what overlay layers show at a directory, copied into a plain one (a spare's /root)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from onshore.runtimes.process.container_fs import merge_layers


def _layer(base: Path, name: str, files: dict[str, str]) -> Path:
    layer = base / name
    for rel, content in files.items():
        path = layer / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    (layer / "root").mkdir(parents=True, exist_ok=True)
    return layer


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): (f"-> {os.readlink(p)}" if p.is_symlink() else p.read_text())
        for p in sorted(root.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def test_later_layers_win_and_keep_modes_and_links(tmp_path: Path) -> None:
    low = _layer(tmp_path, "low", {"root/a.txt": "low", "root/d/x.txt": "x", "etc/other": "not /root"})
    (low / "root" / "run.sh").write_text("#!/bin/sh\n")
    (low / "root" / "run.sh").chmod(0o755)
    high = _layer(tmp_path, "high", {"root/a.txt": "high", "root/d/y.txt": "y"})
    (high / "root" / "link").symlink_to("a.txt")
    dest = tmp_path / "dest"
    dest.mkdir()
    merge_layers([low, high], "root", dest)
    assert _tree(dest) == {
        "a.txt": "high",
        "d/x.txt": "x",
        "d/y.txt": "y",
        "link": "-> a.txt",
        "run.sh": "#!/bin/sh\n",
    }
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755


def test_a_layer_without_the_dir_changes_nothing(tmp_path: Path) -> None:
    low = _layer(tmp_path, "low", {"root/a.txt": "a"})
    bare = tmp_path / "bare"
    (bare / "opt").mkdir(parents=True)
    dest = tmp_path / "dest"
    dest.mkdir()
    merge_layers([low, bare], "root", dest)
    assert _tree(dest) == {"a.txt": "a"}


@pytest.mark.skipif(os.geteuid() != 0, reason="making a whiteout (a 0/0 character device) needs root")
def test_whiteouts_delete_and_opaque_dirs_replace(tmp_path: Path) -> None:
    low = _layer(tmp_path, "low", {"root/gone.txt": "g", "root/d/old.txt": "o", "root/keep.txt": "k"})
    high = _layer(tmp_path, "high", {"root/d/new.txt": "n"})
    os.mknod(high / "root" / "gone.txt", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    try:
        os.setxattr(high / "root" / "d", "user.overlay.opaque", b"y")
    except OSError as exc:
        pytest.skip(f"no user xattrs on this filesystem: {exc}")
    dest = tmp_path / "dest"
    dest.mkdir()
    merge_layers([low, high], "root", dest)
    assert _tree(dest) == {"d/new.txt": "n", "keep.txt": "k"}
