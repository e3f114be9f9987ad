"""Tiny wheels and PEP 503 simple indexes on disk, served as file:// URLs, for package-resolution tests."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def make_wheel(dest: Path, name: str, version: str) -> Path:
    """A pure-Python wheel of package `name` whose __version__ is `version`."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
        archive.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return wheel


def simple_index(root: Path, packages: dict[str, list[str]]) -> str:
    """A PEP 503 simple index at `root` holding these versions of these packages; its file:// URL."""
    for name, versions in packages.items():
        project = root / name
        links = [make_wheel(project, name, version).name for version in versions]
        anchors = "".join(f'<a href="{link}">{link}</a><br>' for link in links)
        (project / "index.html").write_text(f"<html><body>{anchors}</body></html>\n")
    projects = "".join(f'<a href="{name}/">{name}</a><br>' for name in packages)
    (root / "index.html").write_text(f"<html><body>{projects}</body></html>\n")
    return root.resolve().as_uri()
