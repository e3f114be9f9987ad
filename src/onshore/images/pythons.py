"""Find the host's Python interpreters by version, and the modal client package each needs in containers."""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from onshore.images.model import BuildFailed

log = logging.getLogger("onshore.images.pythons")

_VERSION_PROGRAM = "import sys; print('%d.%d.%d' % sys.version_info[:3])"


def uv_binary() -> str:
    """The uv executable: the one installed with Onshore, else one on PATH."""
    try:
        import uv

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise BuildFailed("uv is not installed: Onshore builds image environments with uv") from None
        return found


def _candidates() -> list[str]:
    paths = [getattr(sys, "_base_executable", sys.executable), sys.executable]
    home = Path.home()
    paths += sorted(glob.glob(str(home / ".pyenv/versions/*/bin/python3")))
    paths += sorted(glob.glob(str(home / ".local/share/uv/python/*/bin/python3")))
    for prefix in ("/usr/bin", "/usr/local/bin", "/opt/homebrew/bin"):
        paths += sorted(glob.glob(f"{prefix}/python3.[0-9]*"))
    for minor in range(8, 16):
        which = shutil.which(f"python3.{minor}")
        if which:
            paths.append(which)
    return paths


class PythonFinder:
    """The host's interpreters, probed once: version -> path."""

    def __init__(self) -> None:
        self._found: dict[str, str] | None = None

    def interpreters(self) -> dict[str, str]:
        """Full version ("3.11.7") -> interpreter path, first found wins."""
        if self._found is None:
            found: dict[str, str] = {}
            seen: set[str] = set()
            for path in _candidates():
                real = os.path.realpath(path)
                if real in seen or not os.access(real, os.X_OK) or real.endswith("-config"):
                    continue
                seen.add(real)
                try:
                    out = subprocess.run(
                        [path, "-c", _VERSION_PROGRAM], capture_output=True, text=True, timeout=10, check=True
                    )
                except (OSError, subprocess.SubprocessError):
                    continue
                found.setdefault(out.stdout.strip(), path)
            self._found = found
        return self._found

    def find(self, major_minor: str) -> tuple[str, str]:
        """(path, full version) of an interpreter of this minor version; the server's own is preferred."""
        own = ".".join(str(p) for p in sys.version_info[:2])
        if major_minor == own:
            full = ".".join(str(p) for p in sys.version_info[:3])
            return getattr(sys, "_base_executable", sys.executable), full
        matches = sorted(
            ((v, p) for v, p in self.interpreters().items() if v.rsplit(".", 1)[0] == major_minor),
            key=lambda vp: [int(x) for x in vp[0].split(".")],
        )
        if not matches:
            versions = sorted(self.interpreters(), key=lambda v: [int(x) for x in v.split(".")])
            have = ", ".join(versions) or "none"
            raise BuildFailed(
                f"The image asks for Python {major_minor}, and this host has no Python {major_minor} "
                f"interpreter (found: {have}). The process runtime builds images on the host's interpreters: "
                f"install Python {major_minor} (`uv python install {major_minor}`), or use one found."
            )
        version, path = matches[-1]
        return path, version


def linux_platform() -> str:
    """uv's name for the Linux platform containers of this machine's architecture run on: wheels for glibc
    2.28 (Debian 10, Ubuntu 20.04, RHEL 8 and later), which the client's dependencies ship."""
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return f"{arch}-manylinux_2_28"


class ClientPackages:
    """A folder per (client version, Python minor version) holding the modal client and its dependencies.

    Containers import the client from `<folder>/pkg/modal`, the shape of Modal's own /pkg, so the client drops
    its own frames from remote tracebacks. Built once with uv, then reused.

    `target_platform` (uv's --python-platform, e.g. linux_platform()): the platform the packages are for;
    None: the interpreter's own (containers that run on this host).
    """

    def __init__(self, root: Path, target_platform: str | None = None) -> None:
        self._root = root
        self._platform = target_platform
        self._locks: dict[str, asyncio.Lock] = {}

    async def folder(self, client_version: str, python: str, python_version: str) -> str:
        """The folder for this client version and Python version.

        python: an interpreter of python_version's minor version, which uv installs for; "" when this host
        has none: uv then resolves for that version on the target platform (Linux when none was given)
        without an interpreter of it (--python-version, --python-platform).
        """
        minor = ".".join(python_version.split(".")[:2])
        # "-pyc": compiled ahead, since containers see the folder read-only and could not cache bytecode.
        target = self._root / f"modal-{client_version}-py{minor}" if not python else None
        target = target or self._root / f"modal-{client_version}-py{minor}-pyc"
        ready = target / ".ready"
        if ready.exists():
            return str(target / "pkg")
        lock = self._locks.setdefault(str(target), asyncio.Lock())
        async with lock:
            if not ready.exists():
                await self._build(client_version, python, minor, target)
        return str(target / "pkg")

    async def _build(self, client_version: str, python: str, minor: str, target: Path) -> None:
        for_what = python or f"Python {minor} on {self._platform or linux_platform()}"
        log.info("installing modal==%s for %s into %s", client_version, for_what, target)
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        argv = [uv_binary(), "pip", "install", "--quiet", "--target", str(tmp / "pkg")]
        if python:
            argv += ["--python", python, "--compile-bytecode"]
        else:  # any interpreter runs uv's resolver; the version and platform say what to install for
            argv += ["--python", sys.executable, "--python-version", minor]
        if self._platform or not python:
            argv += ["--python-platform", self._platform or linux_platform()]
        argv.append(f"modal=={client_version}")
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BuildFailed(
                f"Could not install the modal client {client_version} for {for_what} "
                f"(uv exited with {proc.returncode}):\n{out.decode(errors='replace')[-2000:]}"
            )
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        (target / ".ready").write_text(client_version)
