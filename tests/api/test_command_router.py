"""The task command router over raw gRPC: its tokens, their scope, and precise answers to every RPC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Status
from modal_proto import api_grpc, api_pb2, task_command_router_grpc
from modal_proto import task_command_router_pb2 as tcr

from tests.conftest import ServerProcess, run_modal, write_app

APP_NAME = "onshore-test-command-router"


@pytest.fixture
async def channel(server: ServerProcess) -> AsyncIterator[Channel]:
    host, port = server.url.split("//", 1)[1].rsplit(":", 1)
    channel = Channel(host, int(port))
    try:
        yield channel
    finally:
        channel.close()


@pytest.fixture(scope="module")
def deployed(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Any:
    app = write_app(
        tmp_path_factory.mktemp("command-router"),
        "command_router_app.py",
        f"""
        import modal

        app = modal.App("{APP_NAME}")


        @app.function(min_containers=2)
        def idle() -> None:
            pass
        """,
    )
    result = run_modal(server, "deploy", str(app))
    assert result.returncode == 0, result.output
    yield
    run_modal(server, "app", "stop", APP_NAME)


async def _containers(server: ServerProcess, stub: api_grpc.ModalClientStub) -> list[str]:
    deadline = time.monotonic() + 60
    while True:
        listing = await stub.TaskList(api_pb2.TaskListRequest(), metadata=server.token_metadata)
        found = [t.task_id for t in listing.tasks if t.app_description == APP_NAME]
        if len(found) >= 2 or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def _status(call: Any) -> tuple[Status, str]:
    try:
        await asyncio.wait_for(call, 10)
    except GRPCError as exc:
        return exc.status, exc.message or ""
    return Status.OK, ""


async def test_router_tokens_are_required_and_scoped(
    server: ServerProcess, channel: Channel, deployed: None
) -> None:
    stub = api_grpc.ModalClientStub(channel)
    router = task_command_router_grpc.TaskCommandRouterStub(channel)
    first, second = (await _containers(server, stub))[:2]
    access = await stub.TaskGetCommandRouterAccess(
        api_pb2.TaskGetCommandRouterAccessRequest(task_id=first), metadata=server.token_metadata
    )
    assert access.url == server.url and access.jwt
    start = tcr.TaskExecStartRequest(task_id=first, exec_id="ex-router-test", command_args=["true"])

    status, message = await _status(router.TaskExecStart(start))
    assert status == Status.UNAUTHENTICATED, (status, message)
    status, message = await _status(router.TaskExecStart(start, metadata={"authorization": "Bearer forged"}))
    assert status == Status.UNAUTHENTICATED, (status, message)
    # A token is good for its own container only.
    bearer = {"authorization": f"Bearer {access.jwt}"}
    other = tcr.TaskExecStartRequest(task_id=second, exec_id="ex-router-test", command_args=["true"])
    status, message = await _status(router.TaskExecStart(other, metadata=bearer))
    assert status == Status.PERMISSION_DENIED and second in message, (status, message)

    await router.TaskExecStart(start, metadata=bearer)
    done = await router.TaskExecWait(
        tcr.TaskExecWaitRequest(task_id=first, exec_id=start.exec_id), metadata=bearer
    )
    assert done.WhichOneof("exit_status") == "code" and done.code == 0
    status, message = await _status(
        router.TaskExecWait(tcr.TaskExecWaitRequest(task_id=first, exec_id="ex-unknown"), metadata=bearer)
    )
    assert status == Status.NOT_FOUND and "ex-unknown" in message, (status, message)

    # No access to containers that do not exist.
    status, message = await _status(
        stub.TaskGetCommandRouterAccess(
            api_pb2.TaskGetCommandRouterAccessRequest(task_id="ta-AAAAAAAAAAAAAAAAAAAAAA"),
            metadata=server.token_metadata,
        )
    )
    assert status == Status.NOT_FOUND, (status, message)


async def test_every_router_rpc_answers_precisely(
    server: ServerProcess, channel: Channel, deployed: None
) -> None:
    """Each RPC of the router, sent an empty request for a real container: never INTERNAL, never a hang;
    what Onshore does not implement names itself and the feature."""
    stub = api_grpc.ModalClientStub(channel)
    router = task_command_router_grpc.TaskCommandRouterStub(channel)
    task_id = (await _containers(server, stub))[0]
    access = await stub.TaskGetCommandRouterAccess(
        api_pb2.TaskGetCommandRouterAccessRequest(task_id=task_id), metadata=server.token_metadata
    )
    bearer = {"authorization": f"Bearer {access.jwt}"}
    answers: dict[str, tuple[Status, str]] = {}
    for name in sorted(task_command_router_grpc.TaskCommandRouterBase.__abstractmethods__):
        method = getattr(router, name)
        request = method.request_type()
        if hasattr(request, "task_id"):
            request.task_id = task_id
        if name == "TaskExecStdinWriteStream":
            try:
                async with method.open(metadata=bearer) as stream:
                    await stream.send_message(request, end=True)
                    await asyncio.wait_for(stream.recv_message(), 10)
            except GRPCError as exc:
                answers[name] = (exc.status, exc.message or "")
            continue
        # A stream's first answer is enough: an empty read request waits for output that never comes.
        answers[name] = await _status(method(request, metadata=bearer, timeout=5))
    bad = {n: a for n, a in answers.items() if a[0] in (Status.INTERNAL, Status.UNKNOWN)}
    assert not bad, bad
    unimplemented = {n: m for n, (s, m) in answers.items() if s == Status.UNIMPLEMENTED}
    assert "TaskExecStart" not in unimplemented and "TaskExecWait" not in unimplemented
    assert {"TaskSnapshotFilesystem", "SandboxStdinWriteV2", "TaskContainerCreate"} <= set(unimplemented)
    unnamed = {n: m for n, m in unimplemented.items() if n not in m or "not supported" not in m}
    assert not unnamed, unnamed


async def test_container_info_and_stop_of_unknown_ids(server: ServerProcess, channel: Channel) -> None:
    stub = api_grpc.ModalClientStub(channel)
    made_up = "ta-AAAAAAAAAAAAAAAAAAAAAA"
    for call in (
        stub.TaskGetInfo(api_pb2.TaskGetInfoRequest(task_id=made_up), metadata=server.token_metadata),
        stub.ContainerStop(api_pb2.ContainerStopRequest(task_id=made_up), metadata=server.token_metadata),
        stub.AppGetLogs(api_pb2.AppGetLogsRequest(task_id=made_up), metadata=server.token_metadata),
    ):
        status, message = await _status(call)
        assert status == Status.NOT_FOUND and made_up in message, (status, message)
