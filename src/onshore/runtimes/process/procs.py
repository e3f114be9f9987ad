"""One container process of the process runtime: how it is spawned, told who it is, read and stopped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path

from onshore.runtimes.base import FD_STDERR, FD_STDOUT
from onshore.runtimes.process.cgroups import Cgroup

# How long a container's partial output line waits for the rest of its line before it is logged as it is.
PARTIAL_LINE_WAIT = 0.05


@dataclass
class Proc:
    process: asyncio.subprocess.Process
    task_id: str = ""
    scratch: Path | None = None  # a sandboxed container's scratch dir, removed when it ends
    cgroup: Cgroup | None = None  # a container with hard limits: its cgroup, removed when it ends
    memory_limit_mb: int = 0
    spare_dir: Path | None = None  # an image spare's own dirs (its /root and io), removed when it ends
    image_key: tuple[str, ...] = ()  # an image spare: the image it is ready for
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    waiter: asyncio.Task[None] | None = None
    env: dict[str, str] = field(default_factory=dict)  # its whole environment and working directory
    cwd: str = ""


# Called with a process, its fd (FD_STDOUT/FD_STDERR) and whole lines of what it wrote.
Forward = Callable[[Proc, int, str], None]


def _die_with_server() -> None:
    """In the child before exec: get SIGKILL if the server process dies, so no container outlives it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except Exception:  # not Linux: containers are still stopped on a clean shutdown
        pass


def _child_setup(cgroup: Cgroup | None) -> Callable[[], None]:
    def setup() -> None:
        _die_with_server()
        if cgroup is not None:
            cgroup.join()  # before the program runs, so everything it starts is limited too

    return setup


async def spawn(
    python: str,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    stdin: int,
    cgroup: Cgroup | None,
    forward: Forward,
    wait: Callable[[Proc], Coroutine[None, None, None]],
) -> Proc:
    """Start a process in its own process group; its output goes to `forward`, its end to `wait`."""
    process = await asyncio.create_subprocess_exec(
        python,
        *argv,
        cwd=cwd,
        env=env,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, so a stop ends everything it started
        preexec_fn=_child_setup(cgroup) if sys.platform == "linux" else None,
    )
    entry = Proc(process, env=env, cwd=cwd, cgroup=cgroup)
    assert process.stdout is not None and process.stderr is not None
    entry.readers = [
        asyncio.create_task(_pump(entry, FD_STDOUT, process.stdout, forward)),
        asyncio.create_task(_pump(entry, FD_STDERR, process.stderr, forward)),
    ]
    entry.waiter = asyncio.create_task(wait(entry))
    return entry


async def _pump(entry: Proc, fd: int, stream: asyncio.StreamReader, forward: Forward) -> None:
    """Forward a process's output as whole lines: a line written in pieces (print() writes its text and its
    newline apart) is one log entry. A partial line goes out after a short pause (a prompt, a progress bar)
    or at the end."""
    pending = ""
    while True:
        try:
            if pending:
                chunk = await asyncio.wait_for(stream.read(65536), PARTIAL_LINE_WAIT)
            else:
                chunk = await stream.read(65536)
        except TimeoutError:
            forward(entry, fd, pending)
            pending = ""
            continue
        if not chunk:
            forward(entry, fd, pending)
            return
        text = pending + chunk.decode(errors="replace")
        cut = text.rfind("\n") + 1
        forward(entry, fd, text[:cut])
        pending = text[cut:]


async def send_go(entry: Proc, env: dict[str, str], cwd: str) -> None:
    """Tell a spare process which container it now is: its environment and working directory."""
    entry.env, entry.cwd = {**entry.env, **env}, cwd
    stdin = entry.process.stdin
    assert stdin is not None
    stdin.write((json.dumps({"env": env, "cwd": cwd}) + "\n").encode())
    with contextlib.suppress(ConnectionError):
        await stdin.drain()
    stdin.close()


async def stop(entry: Proc, grace: float) -> None:
    """SIGINT, `grace` seconds to end, then SIGKILL to its process group; returns once it is reaped."""
    pid = entry.process.pid
    if grace > 0:
        # SIGINT lets the entrypoint run @modal.exit hooks and shut down cleanly.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(entry.process.wait()), grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if entry.waiter is not None:
        with contextlib.suppress(Exception):
            await asyncio.shield(entry.waiter)
