"""Overlay mounts for volumes on this machine: mount one on the host, and swap one inside a container.

A container sees a volume through an overlay: its committed snapshot as the read-only lower dir, the
container's own writes in an upper dir. The first overlay is mounted on the host and bound into the
container when it starts. A reload replaces it in the container's mount namespace: a helper process (setns
needs a single-threaded process) builds the new overlay with the new mount API while still in the host's
namespace, where the server's paths resolve, then enters the container's namespace, unmounts the old one
there (failing with EBUSY while a file in it is open or a process has its cwd in it: the kernel's own check)
and moves the new one into place. The same helper also shows a mount of the host at a path of a running
container (a spare process that becomes a container with volumes: its namespace was made before its mounts
were known). Needs root. The system calls themselves are in mount_syscalls.py.
"""

from __future__ import annotations

import asyncio
import sys

from onshore.runtimes import mount_syscalls
from onshore.runtimes.mount_syscalls import EXIT_BUSY, MountError, mount_overlay, unmount

__all__ = ["MountError", "bind_into", "mount_overlay", "swap", "unmount"]
_HELPER = mount_syscalls.__file__


async def swap(pid: int, target: str, lowers: list[str], upper: str, work: str) -> None:
    """Put a new overlay at target in the mount namespace of pid, replacing the one there.
    MountError(busy=True) when the old one is in use; it then stays as it was."""
    await _run_helper("swap", str(pid), target, "\n".join(lowers), upper, work)


async def bind_into(pid: int, source: str, target: str) -> None:
    """Show the host's mount at source at target (made if missing) in the mount namespace of pid."""
    await _run_helper("bind", str(pid), target, source)


async def _run_helper(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",  # the standard library only: no site packages, no environment
        "-S",
        _HELPER,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode == EXIT_BUSY:
        raise MountError(err.decode(errors="replace").strip(), busy=True)
    if proc.returncode != 0:
        raise MountError(err.decode(errors="replace").strip() or f"the mount helper exited {proc.returncode}")
