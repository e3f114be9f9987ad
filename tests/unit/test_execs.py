"""ExecService and TaskDirectory on the fake runtime: exec I/O and exit, refusals, user stops, tokens."""

from __future__ import annotations

import asyncio

import pytest

from onshore.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, Unauthenticated
from onshore.events import Events
from onshore.models import FunctionSpec
from onshore.runtimes.base import FD_STDERR, FD_STDOUT, ExecSpec, PtySize
from onshore.runtimes.fake import FakeExec, FakeRuntime
from onshore.services import execs as execs_module
from onshore.services.call_state import STATUS_SUCCESS, ContainerOutput
from onshore.services.calls import CallService
from onshore.services.clock import FakeClock
from onshore.services.containers import ContainerService, LaunchPlan, Task, TaskState
from onshore.services.execs import ExecService, RouterTokens
from onshore.services.logs import LogService
from onshore.services.tasks import TaskDirectory
from onshore.store.memory import memory_store

FN = "fu-unit"
APP = "ap-unit"


async def _plan(function_id: str, task_id: str) -> LaunchPlan:
    return LaunchPlan(container_args=b"", code_dir="/tmp", client_version="", env={})


class Harness:
    """Containers on the fake runtime, wired to a TaskDirectory and an ExecService as in the server."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.runtime = FakeRuntime()
        self.calls = CallService(
            memory_store(), {FN: FunctionSpec(tag="f")}.get, lambda s, m: m.encode(), self.clock, 0.2
        )
        self.logs = LogService(self.clock)
        events = Events()
        self.containers = ContainerService(
            self.runtime,
            self.calls,
            self.logs,
            _plan,
            lambda s, m: m.encode(),
            self.clock,
            "unix:///x",
            events=events,
        )
        self.tasks = TaskDirectory(self.containers, self.calls, self.logs, self.clock)
        self.execs = ExecService(self.runtime, self.tasks, self.clock)

        def on_exit(task: Task) -> None:
            self.tasks.record_exit(task)
            self.execs.container_ended(task.task_id)

        events.container_exited.connect(on_exit)

    async def container(self) -> Task:
        task = self.containers.reserve(FN, APP)
        await self.containers.launch(task)
        self.containers.mark_running(task)
        return task

    async def exec(self, task: Task, exec_id: str = "ex-1", **spec: object) -> FakeExec:
        await self.execs.start(task.task_id, exec_id, ExecSpec(argv=["sh"], **spec))  # type: ignore[arg-type]
        return self.runtime.execs[-1]

    async def read_all(self, task: Task, exec_id: str, fd: int, offset: int = 0) -> bytes:
        return b"".join([chunk async for chunk in self.execs.read(task.task_id, exec_id, fd, offset)])


async def test_exec_output_stdin_and_exit_status() -> None:
    h = Harness()
    task = await h.container()
    proc = await h.exec(task)
    proc.emit(FD_STDOUT, b"hello ")
    proc.emit(FD_STDOUT, b"world")
    proc.emit(FD_STDERR, b"oops")
    # Stdin is written at offsets; a retried write is not written twice, a gap is refused.
    await h.execs.write_stdin(task.task_id, "ex-1", 0, b"abc", eof=False)
    await h.execs.write_stdin(task.task_id, "ex-1", 0, b"abcdef", eof=False)
    with pytest.raises(InvalidArgument):
        await h.execs.write_stdin(task.task_id, "ex-1", 10, b"x", eof=False)
    await h.execs.write_stdin(task.task_id, "ex-1", 6, b"", eof=True)
    assert bytes(proc.stdin) == b"abcdef" and proc.stdin_closed
    assert h.execs.stdin_status(task.task_id, "ex-1") == (6, True)
    assert h.execs.poll(task.task_id, "ex-1") is None

    waiter = asyncio.create_task(h.execs.wait(task.task_id, "ex-1"))
    proc.exit(3)
    # Readers get all of it, from any offset; the exit status waits until they have.
    out, err, tail = await asyncio.gather(
        h.read_all(task, "ex-1", FD_STDOUT),
        h.read_all(task, "ex-1", FD_STDERR),
        h.read_all(task, "ex-1", FD_STDOUT, offset=6),
    )
    assert (out, err, tail) == (b"hello world", b"oops", b"world")
    assert await asyncio.wait_for(waiter, 1.0) == 3
    assert h.execs.poll(task.task_id, "ex-1") == 3


async def test_exit_status_does_not_wait_forever_for_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execs_module, "OUTPUT_DRAIN_SECONDS", 0.2)
    h = Harness()
    task = await h.container()
    proc = await h.exec(task)
    proc.emit(FD_STDOUT, b"unread")
    proc.exit(0)
    assert await asyncio.wait_for(h.execs.wait(task.task_id, "ex-1"), 2.0) == 0
    assert await h.read_all(task, "ex-1", FD_STDOUT) == b"unread"  # still readable afterwards


async def test_a_container_that_ends_kills_its_commands() -> None:
    h = Harness()
    task = await h.container()
    proc = await h.exec(task)
    h.runtime.crash(task.task_id)
    assert proc.killed
    assert await asyncio.wait_for(h.execs.wait(task.task_id, "ex-1"), 5.0) == -9
    with pytest.raises(NotFound, match="has stopped"):
        await h.exec(task, "ex-2")


async def test_exec_refusals() -> None:
    h = Harness()
    task = await h.container()
    with pytest.raises(NotFound, match="not found"):
        await h.execs.start("ta-missing", "ex-1", ExecSpec(argv=["sh"]))
    await h.exec(task)
    await h.exec(task)  # a retried start of the same exec starts nothing new
    assert len(h.runtime.execs) == 1
    other = await h.container()
    with pytest.raises(AlreadyExists):
        await h.exec(other)
    with pytest.raises(NotFound):
        h.execs.session(other.task_id, "ex-1")  # an exec is reached only through its own container
    task.state = TaskState.STOPPING
    with pytest.raises(Conflict, match="stopping"):
        await h.exec(task, "ex-3")
    starting = h.containers.reserve(FN, APP)  # not launched yet
    with pytest.raises(Conflict, match="still starting"):
        await h.exec(starting, "ex-4")


async def test_a_terminal_nobody_reads_is_hung_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execs_module, "ORPHANED_PTY_SECONDS", 0.1)
    h = Harness()
    task = await h.container()
    read = await h.exec(task, "ex-read", pty=PtySize())
    reader = asyncio.create_task(h.read_all(task, "ex-read", FD_STDOUT))
    piped = await h.exec(task, "ex-piped")  # a piped command may run unread
    orphan = await h.exec(task, "ex-orphan", pty=PtySize())
    await asyncio.sleep(0.3)
    assert orphan.killed and not read.killed and not piped.killed
    # The client that read it went away: after a while, its terminal is hung up too.
    reader.cancel()
    await asyncio.sleep(0.3)
    assert read.killed and not piped.killed


async def test_stop_reruns_running_inputs_elsewhere() -> None:
    h = Harness()
    call = h.calls.create_call(FN, APP, 1, 1)
    h.calls.add_inputs(call, [(0, b"payload")])
    task = await h.container()
    taken = await h.calls.next_inputs(task.task_id, FN)
    assert h.calls.demand(FN) == (0, 1)
    await h.tasks.stop(task.task_id, graceful=False)
    assert h.runtime.stopped == [task.task_id]
    assert h.calls.demand(FN) == (1, 0), "the input should wait for another container"
    again = await h.calls.next_inputs("ta-other", FN)
    assert [i.input_id for i in again] == [taken[0].input_id]
    info = h.tasks.find(task.task_id)
    assert info.finished_at and not info.live and info.app_id == APP


async def test_graceful_stop_waits_for_running_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("onshore.services.tasks.DRAIN_POLL_SECONDS", 0.01)
    h = Harness()
    call = h.calls.create_call(FN, APP, 1, 1)
    h.calls.add_inputs(call, [(0, b"payload")])
    task = await h.container()
    taken = await h.calls.next_inputs(task.task_id, FN)
    await h.tasks.stop(task.task_id, graceful=True)
    assert task.state == TaskState.STOPPING and task.draining
    await asyncio.sleep(0.05)
    assert h.runtime.stopped == [], "a draining container must finish its input first"
    output = ContainerOutput(taken[0].input_id, STATUS_SUCCESS, b"ok", 1, 0.0, 0.0, 0)
    h.calls.put_outputs(task.task_id, [output])
    for _ in range(100):
        if h.runtime.stopped:
            break
        await asyncio.sleep(0.01)
    assert h.runtime.stopped == [task.task_id]
    assert call.num_done == 1


async def test_graceful_then_forced_stop() -> None:
    h = Harness()
    call = h.calls.create_call(FN, APP, 1, 1)
    h.calls.add_inputs(call, [(0, b"payload")])
    task = await h.container()
    await h.calls.next_inputs(task.task_id, FN)
    await h.tasks.stop(task.task_id, graceful=True)
    await h.tasks.stop(task.task_id, graceful=False)  # a stop after a graceful one ends it now
    assert h.runtime.stopped == [task.task_id]
    assert h.calls.demand(FN) == (1, 0)


def test_router_tokens() -> None:
    clock = FakeClock()
    tokens = RouterTokens(clock)
    token = tokens.issue("ta-1", "ak-1")
    assert token.count(".") == 2  # a JWT, which the client reads its expiry from
    assert tokens.verify(token) == "ta-1"
    with pytest.raises(Unauthenticated, match="Invalid"):
        RouterTokens(clock).verify(token)  # another server's key
    with pytest.raises(Unauthenticated, match="Invalid"):
        tokens.verify("not-a-token")
    clock.advance(execs_module.TOKEN_SECONDS + 1)
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.verify(token)
