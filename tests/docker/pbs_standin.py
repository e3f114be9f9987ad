"""Test-only: a stand-in python-build-standalone "install_only" tarball, made from the tests' own Python.

No release of python-build-standalone can be downloaded where the tests run, so the tests serve this stand-in
through a file:// mirror (ONSHORE_PYTHON_STANDALONE_MIRROR) laid out like the release assets.

Which Python it is made from, and why: the stand-in must run in an image without Python at /usr/local, as a
real install_only build does (it is statically linked against OpenSSL, libffi, sqlite...). Neither Python on
the test machine is relocatable as it is:

- pyenv's (e.g. /root/.pyenv/versions/3.11.7) is built with --enable-shared and an absolute RUNPATH to its
  own lib/ dir, which a container does not have: copied elsewhere it only seems to run because the original
  is still there. Its extension modules load the host's libssl, libffi, ... .
- Debian's python3 (/usr/bin/python3, which `make` prefers for .venv, and the debootstrap tree's) has no
  shared libpython, but it and its extension modules load libexpat, libssl, libffi, libmpdec ... from
  /usr/lib, which an image without Python lacks too.

So the stand-in takes the tests' own interpreter (sys.base_prefix, Python 3.11) and makes it self-contained
as install_only builds are: the interpreter, libpython and the standard library (less tests, tkinter/idle,
site-packages and bytecode, to keep it small) under python/, every shared library they need besides glibc's
copied into python/lib, and each ELF file's RUNPATH set relative to itself ($ORIGIN) with patchelf (Debian's
`patchelf` package). Like the 2023 releases, it has bin/python3 (a symlink) but no bin/python. Its version is
the tests' Python's (3.11.x), whatever version the asset name says.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.docker.daemon import CACHE, DockerdUnavailable

RECIPE_VERSION = 2
# Left out of the copy of the standard library: big, or needing X11 libraries.
SKIPPED = {"test", "idlelib", "tkinter", "turtledemo", "site-packages", "__pycache__", "ensurepip"}
GLIBC = ("linux-vdso", "ld-linux", "libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so", "libresolv")


def _python_prefix() -> tuple[Path, str]:
    """The tests' own interpreter installation and its X.Y version; skips unless it is Python 3.11."""
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if minor != "3.11":
        raise DockerdUnavailable(f"the python-build-standalone stand-in needs Python 3.11 tests, not {minor}")
    return Path(sys.base_prefix), minor


def _needed(paths: list[Path]) -> dict[str, Path]:
    """Every shared library these ELF files load, besides glibc's: soname -> file on the host."""
    found: dict[str, Path] = {}
    for path in paths:
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            name, _, rest = line.strip().partition(" => ")
            target = rest.split(" (", 1)[0].strip()
            if not target.startswith("/") or name.startswith(GLIBC) or "libpython" in name:
                continue
            found[name] = Path(target)
    return found


def _set_runpath(path: Path, runpath: str) -> None:
    subprocess.run(["patchelf", "--set-rpath", runpath, str(path)], check=True, capture_output=True)


def build_tree(prefix: Path, minor: str, root: Path) -> None:
    """Lay out root/python as an install_only build of the interpreter at `prefix`."""
    python = root / "python"
    stdlib = prefix / "lib" / f"python{minor}"
    (python / "bin").mkdir(parents=True)
    shutil.copy2(prefix / "bin" / f"python{minor}", python / "bin" / f"python{minor}")
    (python / "bin" / "python3").symlink_to(f"python{minor}")
    (python / "lib").mkdir()
    elves = [python / "bin" / f"python{minor}"]
    for lib in prefix.glob("lib/libpython3*.so*"):
        if lib.is_symlink():
            (python / "lib" / lib.name).symlink_to(os.readlink(lib))
        else:
            shutil.copy2(lib, python / "lib" / lib.name)
            elves.append(python / "lib" / lib.name)
    ignore = shutil.ignore_patterns(*SKIPPED, "config-*", "_tkinter*", "*.pyc")
    # Links are copied as what they point to: a distribution's standard library links out of its tree
    # (Debian's sitecustomize.py points into /etc), which an install_only build never does.
    shutil.copytree(stdlib, python / "lib" / f"python{minor}", ignore=ignore, ignore_dangling_symlinks=True)
    (python / "lib" / f"python{minor}" / "site-packages").mkdir()
    modules = sorted((python / "lib" / f"python{minor}" / "lib-dynload").glob("*.so"))
    bundled = []
    for soname, source in _needed([prefix / "bin" / f"python{minor}", *modules]).items():
        shutil.copy2(source, python / "lib" / soname)
        bundled.append(python / "lib" / soname)
    for elf in elves + bundled:
        _set_runpath(elf, "$ORIGIN" if elf.parent.name == "lib" else "$ORIGIN/../lib")
    for module in modules:
        _set_runpath(module, "$ORIGIN/../..")


def ensure_tarball(asset: str) -> Path:
    """The stand-in tarball, under the name `asset` (cached under CACHE, built once per machine)."""
    prefix, minor = _python_prefix()
    if shutil.which("patchelf") is None:
        raise DockerdUnavailable("no patchelf to make the standalone Python stand-in (.ci/setup-docker.sh)")
    stamp = f"pbs-standin-{sys.version_info[0]}.{sys.version_info[1]}.{sys.version_info[2]}-v{RECIPE_VERSION}"
    target = CACHE / stamp / asset
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "pbs-standin.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be making it: wait for it
        if target.exists():
            return target
        work = CACHE / f"pbs-standin-build-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        try:
            build_tree(prefix, minor, work)
            partial = work / "python.tar.gz"
            with tarfile.open(partial, "w:gz", compresslevel=3) as archive:
                archive.add(work / "python", arcname="python")
            target.parent.mkdir(parents=True, exist_ok=True)
            partial.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def make_mirror(directory: Path, release: str, asset: str, *, checksums: bool = True) -> Path:
    """A directory laid out like the release assets: <release>/<asset> (a hard link or copy of the cached
    stand-in) and, with checksums, <release>/SHA256SUMS listing it."""
    source = ensure_tarball(asset)
    folder = directory / release
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, folder / asset)
    except OSError:
        shutil.copyfile(source, folder / asset)
    if checksums:
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        (folder / "SHA256SUMS").write_text(f"{digest}  {asset}\n")
    return directory
