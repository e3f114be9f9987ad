"""Bad input over raw gRPC: unknown RPCs, ids and malformed requests get precise statuses, never INTERNAL."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpclib import GRPCError
from grpclib.const import Status
from modal_proto import api_grpc, api_pb2

from onshore.api.base import MAX_REQUEST_BYTES
from tests.conftest import REPO, ServerProcess, raw_status, raw_stub, run_modal, run_python, write_app

MADE_UP = {
    "function": "fu-AAAAAAAAAAAAAAAAAAAAAA",
    "call": "fc-AAAAAAAAAAAAAAAAAAAAAA",
    "app": "ap-AAAAAAAAAAAAAAAAAAAAAA",
}

# RPCs left out of the empty-request sweep: AppCreate would leave a nameless app in the shared server's
# app list (harmless, but visible to other tests).
SWEEP_SKIP = {"AppCreate"}


@pytest.fixture
async def stub(server: ServerProcess) -> AsyncIterator[api_grpc.ModalClientStub]:
    async with raw_stub(server) as stub:
        yield stub


@pytest.fixture(scope="module")
def deployed_function_id(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A function of a deployed app, to make real calls that the malformed requests then refer to."""
    directory = tmp_path_factory.mktemp("bad-input")
    app = write_app(
        directory,
        "bad_input_app.py",
        """
        import modal

        app = modal.App("onshore-test-bad-input")


        @app.function()
        def echo(x: int) -> int:
            return x
        """,
    )
    result = run_modal(server, "deploy", str(app))
    assert result.returncode == 0, result.output
    lookup = write_app(
        directory,
        "lookup.py",
        """
        import modal

        fn = modal.Function.from_name("onshore-test-bad-input", "echo")
        fn.hydrate()
        print("ID", fn.object_id)
        """,
    )
    result = run_python(server, lookup)
    assert result.returncode == 0, result.output
    return result.stdout.split("ID ", 1)[1].split()[0]


@pytest.mark.parametrize(
    ("rpc", "request_type"),
    [
        ("SandboxCreate", api_pb2.SandboxCreateRequest),
        ("SharedVolumeGetOrCreate", api_pb2.SharedVolumeGetOrCreateRequest),
    ],
)
async def test_unimplemented_rpc_names_itself(
    server: ServerProcess, stub: api_grpc.ModalClientStub, rpc: str, request_type: Any
) -> None:
    status, message = await raw_status(server, getattr(stub, rpc), request_type())
    assert status == Status.UNIMPLEMENTED, (status, message)
    assert rpc in message, message


async def test_unknown_ids_are_not_found(server: ServerProcess, stub: api_grpc.ModalClientStub) -> None:
    cases = [
        (stub.FunctionMap, api_pb2.FunctionMapRequest(function_id=MADE_UP["function"])),
        (
            stub.FunctionGetOutputs,
            api_pb2.FunctionGetOutputsRequest(function_call_id=MADE_UP["call"], timeout=0),
        ),
        (stub.AppGetLayout, api_pb2.AppGetLayoutRequest(app_id=MADE_UP["app"])),
        (stub.FunctionGetById, api_pb2.FunctionGetByIdRequest(function_id=MADE_UP["function"])),
        (stub.FunctionCallCancel, api_pb2.FunctionCallCancelRequest(function_call_id=MADE_UP["call"])),
        (stub.AppGetLifecycle, api_pb2.AppGetLifecycleRequest(app_id=MADE_UP["app"])),
        (stub.AppStop, api_pb2.AppStopRequest(app_id=MADE_UP["app"])),
    ]
    for method, request in cases:
        status, message = await raw_status(server, method, request)
        name = type(request).__name__
        assert status == Status.NOT_FOUND, (name, status, message)
        # The message says what was not found.
        made_up = next(v for v in MADE_UP.values() if v in str(request))
        assert made_up in message, (name, message)


async def test_malformed_input_is_invalid_argument(
    server: ServerProcess, stub: api_grpc.ModalClientStub, deployed_function_id: str
) -> None:
    mapped = await stub.FunctionMap(
        api_pb2.FunctionMapRequest(
            function_id=deployed_function_id,
            function_call_type=api_pb2.FUNCTION_CALL_TYPE_UNARY,
            function_call_invocation_type=api_pb2.FUNCTION_CALL_INVOCATION_TYPE_ASYNC,
        ),
        metadata=server.token_metadata,
    )
    call_id = mapped.function_call_id
    assert call_id
    good = hashlib.sha256(b"some bytes").hexdigest()
    cases = [
        (
            stub.FunctionGetOutputs,
            api_pb2.FunctionGetOutputsRequest(function_call_id=call_id, last_entry_id="garbage", timeout=0),
            "garbage",
        ),
        (stub.MountPutFile, api_pb2.MountPutFileRequest(sha256_hex="not-a-sha", data=b"x"), "not-a-sha"),
        # A well-formed digest that does not match the content.
        (stub.MountPutFile, api_pb2.MountPutFileRequest(sha256_hex=good, data=b"other bytes"), good),
        (
            stub.MountBatchedCheckExistence,
            api_pb2.MountBatchedCheckExistenceRequest(sha256_hex_hashes=["zz"]),
            "zz",
        ),
        (
            stub.MountGetOrCreate,
            api_pb2.MountGetOrCreateRequest(
                files=[api_pb2.MountFile(filename="relative/path.py", sha256_hex=good)]
            ),
            "relative/path.py",
        ),
        (stub.FunctionGetOutputs, api_pb2.FunctionGetOutputsRequest(function_call_id="", timeout=0), ""),
        (stub.FunctionRetryInputs, api_pb2.FunctionRetryInputsRequest(function_call_jwt="not-a-jwt"), ""),
    ]
    for method, request, mentioned in cases:
        status, message = await raw_status(server, method, request)
        name = type(request).__name__
        assert status == Status.INVALID_ARGUMENT, (name, status, message)
        assert mentioned in message, (name, message)
    # The bad requests changed nothing: the call is still there and still answers.
    status, message = await raw_status(
        server,
        stub.FunctionGetOutputs,
        api_pb2.FunctionGetOutputsRequest(function_call_id=call_id, timeout=0),
    )
    assert status == Status.OK, (status, message)


async def test_bad_credentials_are_unauthenticated(
    server: ServerProcess, stub: api_grpc.ModalClientStub
) -> None:
    bad = {"x-modal-token-id": server.token["token_id"], "x-modal-token-secret": "as-wrong"}
    with pytest.raises(GRPCError) as info:
        await stub.AppList(api_pb2.AppListRequest(), metadata=bad)
    assert info.value.status == Status.UNAUTHENTICATED
    with pytest.raises(GRPCError) as info:
        await stub.AppList(api_pb2.AppListRequest())
    assert info.value.status == Status.UNAUTHENTICATED


async def test_no_rpc_answers_internal_to_an_empty_request(
    server: ServerProcess, stub: api_grpc.ModalClientStub
) -> None:
    """Every RPC of the client's service, sent an empty request: a precise answer, never INTERNAL."""
    internal: dict[str, str] = {}
    unnamed: dict[str, str] = {}
    answered = 0
    for name in sorted(api_grpc.ModalClientBase.__abstractmethods__):
        if name in SWEEP_SKIP:
            continue
        method = getattr(stub, name)
        try:
            status, message = await raw_status(server, method, method.request_type(), timeout=5.0)
        except TimeoutError:
            continue  # a long poll that waits for something to happen is a fine answer to an empty request
        answered += 1
        if status == Status.INTERNAL or status == Status.UNKNOWN:
            internal[name] = message
        if status == Status.UNIMPLEMENTED and name not in message:
            unnamed[name] = message
    assert answered > 100
    assert not internal, f"RPCs that failed with a server error: {internal}"
    assert not unnamed, f"UNIMPLEMENTED answers that do not name their RPC: {unnamed}"


def test_server_still_serves_after_bad_input(server: ServerProcess) -> None:
    result = run_modal(server, "run", str(REPO / "examples" / "hello_world.py"))
    assert result.returncode == 0, result.output
    assert "square(7) = 49" in result.output


async def test_client_outside_the_supported_series_is_refused(
    server: ServerProcess, stub: api_grpc.ModalClientStub
) -> None:
    """A client of another protocol series gets a precise FAILED_PRECONDITION naming the supported series."""
    metadata = {**server.token_metadata, "x-modal-client-version": "0.64.0"}
    with pytest.raises(GRPCError) as info:
        await stub.AppList(api_pb2.AppListRequest(), metadata=metadata)
    assert info.value.status == Status.FAILED_PRECONDITION
    assert "1.6." in (info.value.message or "") and "0.64.0" in (info.value.message or "")


async def test_unimplemented_rpc_is_logged_once(
    server: ServerProcess, stub: api_grpc.ModalClientStub
) -> None:
    """The server logs an unimplemented RPC the first time it is called, not on every call."""
    for _ in range(3):
        status, _message = await raw_status(server, stub.DomainList, api_pb2.DomainListRequest())
        assert status == Status.UNIMPLEMENTED
    deadline = time.monotonic() + 5
    while "DomainList" not in server.log_text() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert re.findall(r"unimplemented RPC called: DomainList$", server.log_text(), re.M) == [
        "unimplemented RPC called: DomainList"
    ]


async def test_oversized_request_is_resource_exhausted(
    server: ServerProcess, stub: api_grpc.ModalClientStub
) -> None:
    """A request over the size limit gets RESOURCE_EXHAUSTED naming the limit, and nothing is stored."""
    data = b"x" * (MAX_REQUEST_BYTES + 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    status, message = await raw_status(
        server, stub.MountPutFile, api_pb2.MountPutFileRequest(sha256_hex=digest, data=data)
    )
    assert status == Status.RESOURCE_EXHAUSTED
    assert "limit" in message
    missing = await stub.MountBatchedCheckExistence(
        api_pb2.MountBatchedCheckExistenceRequest(sha256_hex_hashes=[digest]), metadata=server.token_metadata
    )
    assert list(missing.missing_sha256_hex_hashes) == [digest]
