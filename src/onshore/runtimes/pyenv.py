"""Python environments that hold a given version of the modal client, for process containers."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

from onshore.errors import Conflict

log = logging.getLogger("onshore.pyenv")


def installed_client_version() -> str:
    return metadata.version("modal")


def client_package_dir(python: str) -> Path | None:
    """Where the modal package of this Python environment lives (without importing it here)."""
    if python == sys.executable:
        spec = importlib.util.find_spec("modal")
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations)))
    env_dir = Path(python).parent.parent
    found = sorted(env_dir.glob("lib/python*/site-packages/modal"))
    return found[0] if found else None


class ClientEnvironments:
    """Finds or builds (once, cached in the data dir) a Python environment with modal==VERSION."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._locks: dict[str, asyncio.Lock] = {}

    def _env_python(self, version: str) -> Path:
        return self._root / f"modal-{version}" / "bin" / "python"

    async def python_for(self, version: str) -> str:
        if not version or version == installed_client_version():
            return sys.executable
        python = self._env_python(version)
        if python.exists() and (python.parent.parent / ".ready").exists():
            return str(python)
        lock = self._locks.setdefault(version, asyncio.Lock())
        async with lock:
            if not (python.parent.parent / ".ready").exists():
                await self._build(version)
        return str(python)

    async def _build(self, version: str) -> None:
        env_dir = self._env_python(version).parent.parent
        log.info("building a Python environment with modal==%s in %s", version, env_dir)
        uv = shutil.which("uv")
        if uv:
            steps = [
                [uv, "venv", "--python", sys.executable, str(env_dir)],
                [uv, "pip", "install", "--python", str(env_dir / "bin" / "python"), f"modal=={version}"],
            ]
        else:
            steps = [
                [sys.executable, "-m", "venv", str(env_dir)],
                [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", f"modal=={version}"],
            ]
        for argv in steps:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=dict(os.environ)
            )
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                tail = out.decode(errors="replace")[-2000:]
                raise Conflict(
                    f"Could not build a container environment with modal=={version} "
                    f"(`{' '.join(argv)}` exited with {proc.returncode}):\n{tail}"
                )
        (env_dir / ".ready").write_text(version)
