"""Commands run in live containers (`modal container exec`, `modal shell`): sessions, I/O, access tokens."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import jwt

from onshore.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from onshore.runtimes.base import (
    EXEC_PIPE,
    FD_STDERR,
    FD_STDOUT,
    ExecProcess,
    ExecSpec,
    Runtime,
)
from onshore.services.clock import Clock
from onshore.services.containers import TaskState
from onshore.services.tasks import TaskDirectory
from onshore.services.waiters import Waiters

log = logging.getLogger("onshore.execs")

# Output kept per stream of a command, for readers that join late or resume from an offset.
MAX_OUTPUT_BYTES = 8 * 1024 * 1024
MAX_READ_CHUNK = 1024 * 1024
MAX_LIVE_EXECS_PER_CONTAINER = 32
# An ended command's exit status and output stay readable this long.
KEEP_ENDED_SECONDS = 300.0
# A command on a terminal (`modal shell`) that no client has read for this long was left behind (the client
# went away without ending it): it is hung up, as a terminal that closes would.
ORPHANED_PTY_SECONDS = 30.0
# After a command exits, how long its exit status waits for readers to take the rest of its output: a
# client prints output as it reads it, and would otherwise see the exit status first and leave.
OUTPUT_DRAIN_SECONDS = 2.0
# Command-router tokens: how long one is valid (the client fetches a new one when it expires).
TOKEN_SECONDS = 30 * 60
_AUDIENCE = "onshore-task-command-router"


class RouterTokens:
    """Short-lived tokens (JWTs, as the client expects) letting their holder run commands in one container."""

    def __init__(self, clock: Clock, key: bytes | None = None) -> None:
        self._clock = clock
        self._key = key or secrets.token_bytes(32)  # per server process: a restart ends every grant

    def issue(self, task_id: str, token_id: str) -> str:
        now = int(self._clock.now())
        claims = {"task_id": task_id, "sub": token_id, "aud": _AUDIENCE, "iat": now}
        claims["exp"] = now + TOKEN_SECONDS
        return jwt.encode(claims, self._key, algorithm="HS256")

    def verify(self, token: str) -> str:
        """The container id the token grants access to; Unauthenticated if it is not valid (any more)."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                audience=_AUDIENCE,
                # Expiry is checked below against the service's clock.
                options={"require": ["exp", "task_id"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidTokenError:
            raise Unauthenticated("Invalid command-router token") from None
        if not isinstance(claims["exp"], int) or claims["exp"] <= self._clock.now():
            raise Unauthenticated("The command-router token has expired")
        return str(claims["task_id"])


class OutputBuffer:
    """One output stream of a command: the newest MAX_OUTPUT_BYTES of it, readable from any offset."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0  # stream offset of _data[0]
        self.ended = False
        self.delivered = asyncio.Event()  # a reader has read it to its end
        self._waiters = Waiters()

    def append(self, chunk: bytes) -> None:
        self._data += chunk
        overflow = len(self._data) - MAX_OUTPUT_BYTES
        if overflow > 0:
            del self._data[:overflow]
            self._start += overflow
        self._waiters.notify()

    def end(self) -> None:
        self.ended = True
        self._waiters.notify()

    async def read(self, offset: int) -> AsyncIterator[bytes]:
        """Chunks from `offset` (or the oldest byte kept) until the stream ends."""
        while True:
            offset = max(offset, self._start)
            position = offset - self._start
            if position < len(self._data):
                chunk = bytes(self._data[position : position + MAX_READ_CHUNK])
                offset += len(chunk)
                yield chunk
                continue
            if self.ended:
                self.delivered.set()
                return
            await self._waiters.wait(30.0)


@dataclass
class ExecSession:
    exec_id: str
    task_id: str
    process: ExecProcess
    outputs: dict[int, OutputBuffer]
    stdin_written: int = 0
    stdin_closed: bool = False
    returncode: int | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # exited, and its output taken or timed out
    jobs: list[asyncio.Task[None]] = field(default_factory=list)
    stdin_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pty: bool = False
    readers: int = 0
    orphan_timer: asyncio.TimerHandle | None = None


class ExecService:
    """Starts commands in live containers through the runtime, and keeps their I/O for the client to use."""

    def __init__(self, runtime: Runtime, tasks: TaskDirectory, clock: Clock) -> None:
        self._runtime = runtime
        self._tasks = tasks
        self._clock = clock
        self.tokens = RouterTokens(clock)
        self._sessions: dict[str, ExecSession] = {}
        self._starting: dict[str, tuple[str, asyncio.Event]] = {}  # exec id -> (container, started)

    # ---------------------------------------------------------------- start
    async def start(self, task_id: str, exec_id: str, spec: ExecSpec, timeout_secs: int = 0) -> None:
        if not exec_id:
            raise InvalidArgument("TaskExecStart: exec_id is required")
        existing = self._sessions.get(exec_id)
        starting = self._starting.get(exec_id)
        owner = existing.task_id if existing else starting[0] if starting else None
        if owner is not None:
            if owner != task_id:
                raise AlreadyExists(f"Exec {exec_id} already exists in another container")
            if starting is not None:
                await starting[1].wait()
                self.session(task_id, exec_id)  # NotFound if that start failed
            return  # a retried start: it runs already
        self._starting[exec_id] = (task_id, asyncio.Event())
        try:
            await self._start(task_id, exec_id, spec, timeout_secs)
        finally:
            self._starting.pop(exec_id)[1].set()

    async def _start(self, task_id: str, exec_id: str, spec: ExecSpec, timeout_secs: int) -> None:
        task = self._tasks.live_task(task_id)
        if task.state == TaskState.STOPPING:
            raise Conflict(f"Container {task_id} is stopping: it takes no new commands")
        if not task.pid:
            raise Conflict(f"Container {task_id} is still starting: try again in a moment")
        live = sum(1 for s in self._sessions.values() if s.task_id == task_id and s.returncode is None)
        if live >= MAX_LIVE_EXECS_PER_CONTAINER:
            raise ResourceExhausted(
                f"Container {task_id} already runs {live} exec'd commands (the limit is "
                f"{MAX_LIVE_EXECS_PER_CONTAINER}); wait for one to finish"
            )
        process = await self._runtime.exec(task_id, spec)
        outputs = {FD_STDOUT: OutputBuffer(), FD_STDERR: OutputBuffer()}
        session = ExecSession(exec_id, task_id, process, outputs, pty=spec.pty is not None)
        self._sessions[exec_id] = session
        self._watch_readers(session)
        # With a PTY both arrive on stdout, and stderr ends when the command does.
        piped = {FD_STDOUT: spec.stdout == EXEC_PIPE, FD_STDERR: spec.stderr == EXEC_PIPE}
        pumps = []
        for fd, buffer in outputs.items():
            if piped[fd] or spec.pty is not None:
                pumps.append(asyncio.create_task(self._pump(process, fd, buffer)))
            else:  # dropped, or merged into stdout
                buffer.end()
                buffer.delivered.set()
        session.jobs = [*pumps, asyncio.create_task(self._watch(session, pumps))]
        if timeout_secs > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(timeout_secs, self._time_out, session, timeout_secs)
        log.info("exec %s in %s: %s (pid %d)", exec_id, task_id, spec.argv[0], process.pid)

    async def _pump(self, process: ExecProcess, fd: int, buffer: OutputBuffer) -> None:
        try:
            while chunk := await process.read(fd):
                buffer.append(chunk)
        except Exception as exc:  # an I/O error ends the stream like its end would
            log.warning("exec output stream %d failed: %s", fd, exc)
        finally:
            buffer.end()

    async def _watch(self, session: ExecSession, pumps: list[asyncio.Task[None]]) -> None:
        try:
            rc = await session.process.wait()
        except Exception:
            log.exception("waiting for exec %s failed", session.exec_id)
            rc = -9
        session.returncode = rc
        # Its output may still be in the pipes, and the client may not have read all of it yet.
        delivered = [asyncio.ensure_future(b.delivered.wait()) for b in session.outputs.values()]
        await asyncio.wait([*pumps, *delivered], timeout=OUTPUT_DRAIN_SECONDS)
        for job in [*pumps, *delivered]:
            job.cancel()  # a pump still running: something it started holds its output open; it ends here
        for buffer in session.outputs.values():
            buffer.end()
        session.ended.set()
        log.info("exec %s in %s ended with %d", session.exec_id, session.task_id, rc)
        asyncio.get_running_loop().call_later(KEEP_ENDED_SECONDS, self._forget, session)

    def _watch_readers(self, session: ExecSession) -> None:
        """A terminal nobody reads from is hung up after a while (only terminals: a piped command may well
        run unread, as a sandbox's exec does)."""
        if session.orphan_timer is not None:
            session.orphan_timer.cancel()
            session.orphan_timer = None
        if session.pty and session.readers == 0 and session.returncode is None:
            loop = asyncio.get_running_loop()
            session.orphan_timer = loop.call_later(ORPHANED_PTY_SECONDS, self._hang_up_orphan, session)

    def _hang_up_orphan(self, session: ExecSession) -> None:
        if session.readers == 0 and session.returncode is None:
            log.info(
                "exec %s in %s: no client reads its terminal any more; hung up",
                session.exec_id,
                session.task_id,
            )
            session.process.kill()

    def _time_out(self, session: ExecSession, seconds: int) -> None:
        if session.returncode is None:
            log.info("exec %s ran past its timeout of %ds: killed", session.exec_id, seconds)
            session.process.kill()

    def _forget(self, session: ExecSession) -> None:
        if self._sessions.get(session.exec_id) is session:
            del self._sessions[session.exec_id]

    # ---------------------------------------------------------------- I/O
    def session(self, task_id: str, exec_id: str) -> ExecSession:
        session = self._sessions.get(exec_id)
        if session is None or session.task_id != task_id:
            raise NotFound(f"Exec {exec_id or '(no id)'} not found in container {task_id or '(no id)'}")
        return session

    async def read(self, task_id: str, exec_id: str, fd: int, offset: int) -> AsyncIterator[bytes]:
        if offset < 0:
            raise InvalidArgument(f"Bad output offset {offset}")
        session = self.session(task_id, exec_id)
        session.readers += 1
        self._watch_readers(session)
        try:
            async for chunk in session.outputs[fd].read(offset):
                yield chunk
        finally:
            session.readers -= 1
            self._watch_readers(session)

    async def write_stdin(self, task_id: str, exec_id: str, offset: int, data: bytes, eof: bool) -> None:
        """Write at a stream offset; a retried write (an offset already written) is not written twice."""
        session = self.session(task_id, exec_id)
        async with session.stdin_lock:
            if offset > session.stdin_written:
                raise InvalidArgument(
                    f"Stdin write at offset {offset}, but only {session.stdin_written} bytes were written"
                )
            fresh = data[session.stdin_written - offset :]
            if fresh and session.stdin_closed:
                raise Conflict(f"The stdin of exec {exec_id} is closed")
            if fresh:
                session.stdin_written += len(fresh)
                if session.returncode is None:
                    await session.process.write(fresh)  # after it exited, input goes nowhere, as in a pipe
            if eof and not session.stdin_closed:
                session.stdin_closed = True
                if session.returncode is None:
                    await session.process.close_stdin()

    def stdin_status(self, task_id: str, exec_id: str) -> tuple[int, bool]:
        session = self.session(task_id, exec_id)
        return session.stdin_written, session.stdin_closed

    def poll(self, task_id: str, exec_id: str) -> int | None:
        session = self.session(task_id, exec_id)
        return session.returncode if session.ended.is_set() else None

    async def wait(self, task_id: str, exec_id: str) -> int:
        session = self.session(task_id, exec_id)
        await session.ended.wait()
        assert session.returncode is not None
        return session.returncode

    # ---------------------------------------------------------------- ends
    def container_ended(self, task_id: str) -> None:
        """Kill what still runs in a container that ended (wired to ContainerService.on_exit)."""
        for session in list(self._sessions.values()):
            if session.task_id == task_id and session.returncode is None:
                session.process.kill()

    async def shutdown(self) -> None:
        jobs = []
        for session in self._sessions.values():
            if session.returncode is None:
                session.process.kill()
            jobs.extend(session.jobs)
        if jobs:
            await asyncio.wait(jobs, timeout=OUTPUT_DRAIN_SECONDS + 1)
