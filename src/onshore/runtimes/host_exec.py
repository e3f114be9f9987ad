"""Commands run in a container from the host (`modal container exec`, `modal shell`): pipes or a PTY."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field, replace

from onshore.errors import InvalidArgument
from onshore.runtimes.base import (
    EXEC_DEVNULL,
    EXEC_TO_STDOUT,
    FD_STDOUT,
    ExecProcess,
    ExecSpec,
)

_CHUNK = 65536
# After the command exits, how long its terminal may still deliver output before it is hung up.
_PTY_DRAIN_SECONDS = 1.0


@dataclass
class ExecTarget:
    """The container a command runs in: its main process, environment and working directory."""

    pid: int
    env: dict[str, str]
    cwd: str
    # A command that runs the rest of its arguments inside the container (entering its namespaces); empty
    # for a container that shares the host's.
    enter: list[str] = field(default_factory=list)
    # The container's root as the host sees it (/proc/<pid>/root), whose /dev/pts a PTY is opened in, so
    # that the command's terminal is one of the container's; "" for a container that shares the host's.
    root: str = ""


# Linux ioctls (asm-generic): unlock a PTY master's peer, and open that peer from the master.
_TIOCSPTLCK = 0x40045431
_TIOCGPTPEER = 0x5441


def _open_pty(root: str) -> tuple[int, int]:
    """A new PTY (master, peer): the host's, or one of the devpts instance under `root`."""
    import pty

    if not root:
        return pty.openpty()
    import fcntl
    import struct

    master = os.open(f"{root}/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY)
    try:
        fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
        peer = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    except BaseException:
        os.close(master)
        raise
    return master, int(peer)


async def _check_command(target: ExecTarget, env: dict[str, str], cwd: str, command: str) -> None:
    """Inside an entered container: fail clearly, before starting it, when the command cannot be found."""
    probe = 'cd "$1" 2>/dev/null; command -v -- "$2" >/dev/null'
    process = await asyncio.create_subprocess_exec(
        *target.enter,
        "/bin/sh",
        "-c",
        probe,
        "sh",
        cwd,
        command,
        env=env,
        cwd="/",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    if await process.wait() != 0:
        raise InvalidArgument(f"Cannot run {command!r}: it was not found in the container")


def _child_setup(controlling_tty: bool) -> None:
    """In the child before exec: die with the server; with a PTY, make it the controlling terminal."""
    if sys.platform == "linux":
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if controlling_tty:
        import fcntl
        import termios

        fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def start_exec(target: ExecTarget, spec: ExecSpec) -> ExecProcess:
    """Run spec.argv in the target container: its environment plus spec.env, in its working directory.

    This is the single place a command enters a container: a container that shares the host's namespaces
    gets a sibling process; a sandboxed one is entered with `target.enter` (nsenter into its namespaces).
    """
    if not spec.argv:
        raise InvalidArgument("No command to run")
    env = {**target.env, **spec.env}
    cwd = spec.workdir or target.cwd
    if target.enter and target.root:  # a sandbox entered with nsenter (not the docker CLI)
        await _check_command(target, env, cwd, spec.argv[0])
    if target.enter:
        # The working directory is inside the container: the entering command changes to it.
        script = 'cd "$1" || exit 126; shift; exec "$@"'
        if spec.pty is not None and spec.pty.rows > 0:
            # An entering command may size its terminal only once the command runs (docker exec -t does):
            # wait a moment for the size, so the command starts with it.
            script = (
                'cd "$1" || exit 126; shift; i=0; while [ "$(stty size 2>/dev/null)" = "0 0" ] '
                '&& [ "$i" -lt 40 ]; do sleep 0.05; i=$((i+1)); done; exec "$@"'
            )
        spec = replace(spec, argv=[*target.enter, "/bin/sh", "-c", script, "sh", cwd, *spec.argv])
        cwd = "/"
    if spec.pty is not None:
        env.update(spec.pty.env)
        env.setdefault("TERM", "xterm-256color")
    try:
        if spec.pty is not None:
            return await _PtyExec.start(spec, env, cwd, target.root)
        return await _PipeExec.start(spec, env, cwd)
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        what = exc.filename or spec.argv[0]
        raise InvalidArgument(f"Cannot run {spec.argv[0]!r}: {exc.strerror}: {what}") from None


class _PipeExec:
    """A command whose stdin, stdout and stderr are pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.pid = process.pid

    @classmethod
    async def start(cls, spec: ExecSpec, env: dict[str, str], cwd: str) -> _PipeExec:
        pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        stderr = {EXEC_DEVNULL: devnull, EXEC_TO_STDOUT: asyncio.subprocess.STDOUT}.get(spec.stderr, pipe)
        process = await asyncio.create_subprocess_exec(
            *spec.argv,
            cwd=cwd,
            env=env,
            stdin=pipe,
            stdout=devnull if spec.stdout == EXEC_DEVNULL else pipe,
            stderr=stderr,
            start_new_session=True,  # its own process group: kill() ends what it started
            preexec_fn=lambda: _child_setup(False),
        )
        return cls(process)

    async def read(self, fd: int) -> bytes:
        stream = self._process.stdout if fd == FD_STDOUT else self._process.stderr
        if stream is None:
            return b""
        return await stream.read(_CHUNK)

    async def write(self, data: bytes) -> None:
        stdin = self._process.stdin
        if stdin is None or stdin.is_closing():
            return
        with contextlib.suppress(ConnectionError):  # it has exited or closed its stdin: the data is dropped
            stdin.write(data)
            await stdin.drain()

    async def close_stdin(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()

    async def wait(self) -> int:
        return await self._process.wait()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _PtyExec:
    """A command attached to a new pseudo-terminal; its output (stdout and stderr) is the terminal's."""

    def __init__(self, process: asyncio.subprocess.Process, master: int) -> None:
        self._process = process
        self.pid = process.pid
        self._master = master
        self._loop = asyncio.get_running_loop()
        self._output = asyncio.StreamReader(loop=self._loop)
        self._hung_up = asyncio.Event()
        self._write_ready: asyncio.Future[None] | None = None
        os.set_blocking(master, False)
        self._loop.add_reader(master, self._on_readable)

    @classmethod
    async def start(cls, spec: ExecSpec, env: dict[str, str], cwd: str, root: str) -> _PtyExec:
        import termios

        assert spec.pty is not None
        master, slave = _open_pty(root)
        try:
            if spec.pty.rows > 0 and spec.pty.cols > 0:
                termios.tcsetwinsize(slave, (spec.pty.rows, spec.pty.cols))
            process = await asyncio.create_subprocess_exec(
                *spec.argv,
                cwd=cwd,
                env=env,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,  # a session of its own, whose controlling terminal is the PTY
                preexec_fn=lambda: _child_setup(True),
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return cls(process, master)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, _CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: every process holding the terminal has closed it
            data = b""
        if data:
            self._output.feed_data(data)
        else:
            self._hang_up()

    def _hang_up(self) -> None:
        """Stop reading and close the terminal (a hang-up for whatever still holds it)."""
        if self._hung_up.is_set():
            return
        self._hung_up.set()
        self._loop.remove_reader(self._master)
        self._loop.remove_writer(self._master)
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        self._output.feed_eof()
        os.close(self._master)

    async def read(self, fd: int) -> bytes:
        if fd != FD_STDOUT:
            await self._process.wait()  # a terminal has one output stream: stderr ends with the command
            return b""
        return await self._output.read(_CHUNK)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._hung_up.is_set():
            try:
                view = view[os.write(self._master, view) :]
            except BlockingIOError:
                ready: asyncio.Future[None] = self._loop.create_future()
                self._write_ready = ready
                self._loop.add_writer(self._master, _resolve, ready)
                try:
                    await ready
                finally:
                    if not self._hung_up.is_set():
                        self._loop.remove_writer(self._master)
            except OSError:
                return  # the terminal is gone: the input is dropped

    async def close_stdin(self) -> None:
        await self.write(b"\x04")  # a terminal has no half-close: end-of-file is Ctrl-D

    async def wait(self) -> int:
        rc = await self._process.wait()
        # What it wrote just before exiting may still be in the terminal: let it be read, then hang up.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hung_up.wait(), _PTY_DRAIN_SECONDS)
        self._hang_up()
        return rc

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self._hang_up()
