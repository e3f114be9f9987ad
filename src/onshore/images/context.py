"""COPY and ADD for layer builds: files of the build context placed into a layer dir as Docker places them."""

from __future__ import annotations

import glob
import os
import shutil
import tarfile
from pathlib import Path

from onshore.archives import extract_data
from onshore.images.model import BuildFailed


def assemble(target: Path, files: dict[str, bytes], mount_tree: Path | None) -> Path:
    """One directory holding the build context: the context mount's files and the inline context files."""
    if mount_tree is not None and not files:
        return mount_tree
    target.mkdir(parents=True, exist_ok=True)
    if mount_tree is not None:
        shutil.copytree(mount_tree, target, symlinks=True, dirs_exist_ok=True, copy_function=os.link)
    for name, data in files.items():
        path = _inside(target, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return target


def _inside(root: Path, name: str) -> Path:
    """`name` within `root`; a name that climbs out of it is refused."""
    path = Path(os.path.normpath(root / name.lstrip("/")))
    if path != root and root not in path.parents:
        raise BuildFailed(f"'{name}' is outside the build context")
    return path


def _matches(context: Path, source: str) -> list[Path]:
    pattern = _inside(context, source)
    if glob.has_magic(str(pattern)):
        found = [Path(p) for p in sorted(glob.glob(str(pattern)))]
    else:
        found = [pattern] if os.path.lexists(pattern) else []
    return [p for p in found if p == context or context in p.parents]


def copy_into(
    upper: Path,
    context: Path | None,
    sources: list[str],
    dest: str,
    workdir: str,
    *,
    add: bool = False,
    chmod: str = "",
) -> list[str]:
    """Place `sources` (context-relative, globs allowed) at `dest` in the layer dir `upper`; their paths."""
    keyword = "ADD" if add else "COPY"
    destination = dest if dest.startswith("/") else os.path.join(workdir or "/", dest)
    placed: list[str] = []
    found: list[Path] = []
    for source in sources:
        if add and source.startswith(("http://", "https://")):
            raise BuildFailed(f"{keyword} {source}: downloading files in ADD is not supported; use RUN curl")
        matches = _matches(context, source) if context is not None else []
        if not matches:
            raise BuildFailed(f"{keyword} {source}: no such file in the build context")
        found.extend(matches)
    into_dir = dest.endswith("/") or len(found) > 1
    target_root = _inside(upper, destination)
    for path in found:
        if path.is_dir() and not path.is_symlink():
            target_root.mkdir(parents=True, exist_ok=True)
            shutil.copytree(path, target_root, symlinks=True, dirs_exist_ok=True)
            placed.append(destination)
        elif add and tarfile.is_tarfile(path):
            target_root.mkdir(parents=True, exist_ok=True)
            try:
                with tarfile.open(path) as archive:
                    extract_data(archive, target_root)
            except tarfile.TarError as exc:
                raise BuildFailed(
                    f"{keyword} {source}: the archive {path.name} was not unpacked: {exc}"
                ) from None
            placed.append(destination)
        else:
            target = target_root / path.name if into_dir or target_root.is_dir() else target_root
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target, follow_symlinks=False)
            placed.append("/" + str(target.relative_to(upper)))
    if chmod:
        try:
            mode = int(chmod, 8)
        except ValueError:
            raise BuildFailed(f"{keyword} --chmod={chmod}: not an octal mode") from None
        for item in placed:
            os.chmod(_inside(upper, item), mode)
    return placed
