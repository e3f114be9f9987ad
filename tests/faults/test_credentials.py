"""Bad credentials on every RPC, a container against another app, bad blob signatures: always refused."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from modal_proto import api_grpc, api_pb2

from tests.conftest import ServerProcess, clean_env, run_modal, run_python, write_app
from tests.faults.rawgrpc import (
    call_raw,
    host_port,
    implemented_rpcs,
    raw_channel,
    rpc_specs,
)

SEED = 7

VICTIM_APP = """
import modal

app = modal.App("faults-victim")


@app.function()
def work(x: int) -> int:
    return x
"""

# A warm container that hands its own credential (the headers the server gave it) to the test.
PROBE_APP = """
import os

import modal

app = modal.App("faults-probe")


@app.function(scaledown_window=120, timeout=60)
def credential() -> str:
    return os.environ.get("MODAL_OVERRIDE_HEADERS", "")
"""

PROBE_CLIENT = """
import json, sys, modal

fn = modal.Function.from_name(sys.argv[1], sys.argv[2])
if sys.argv[3] == "call":
    print("RESULT " + json.dumps(fn.remote()), flush=True)
else:
    fn.hydrate()
    print("RESULT " + json.dumps(fn.object_id), flush=True)
"""


def _onshore(server: ServerProcess, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "onshore.cli.main", *args, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _new_token(server: ServerProcess, label: str) -> dict[str, str]:
    out = _onshore(server, "token", "create", "--label", label)
    exports = dict(
        line.split(" ", 1)[1].split("=", 1) for line in out.splitlines() if line.startswith("export")
    )
    return {
        "x-modal-token-id": exports["MODAL_TOKEN_ID"],
        "x-modal-token-secret": exports["MODAL_TOKEN_SECRET"],
    }


async def _app_list_status(server: ServerProcess, metadata: dict[str, str]) -> Status:
    host, port = host_port(server)
    channel = Channel(host, port)
    try:
        await api_grpc.ModalClientStub(channel).AppList(
            api_pb2.AppListRequest(), metadata=metadata, timeout=5
        )
    except GRPCError as exc:
        return exc.status
    finally:
        channel.close()
    return Status.OK


async def test_bad_client_credentials_are_refused_by_every_implemented_rpc(
    fault_server: ServerProcess,
) -> None:
    real = fault_server.token_metadata
    revoked = _new_token(fault_server, "to-revoke")
    assert await _app_list_status(fault_server, revoked) == Status.OK, "the new token never worked"
    _onshore(fault_server, "token", "revoke", revoked["x-modal-token-id"])
    time.sleep(1.2)  # the server trusts a verified token for up to a second before asking its store again
    credentials = {
        "wrong secret": {**real, "x-modal-token-secret": "as-not-the-secret"},
        "no secret": {"x-modal-token-id": real["x-modal-token-id"]},
        "unknown token": {"x-modal-token-id": "ak-" + "Q" * 22, "x-modal-token-secret": "as-whatever"},
        "malformed token": {"x-modal-token-id": "x" * 4000, "x-modal-token-secret": "y" * 4000},
        "revoked token": revoked,
        "unknown container": {"x-onshore-task-id": "ta-" + "Q" * 22, "x-onshore-task-secret": "as-whatever"},
        # The server quotes the task id it does not know: a long one must not come back whole.
        "malformed container": {"x-onshore-task-id": "ta-" + "Q" * 8000, "x-onshore-task-secret": "as-x"},
    }
    rng = random.Random(SEED)
    specs = rpc_specs()
    channel = raw_channel(fault_server)
    try:
        implemented = await implemented_rpcs(channel, real)
        assert len(implemented) >= 40, implemented
        answers: list[tuple[str, str, str, Status, str]] = []
        for kind, metadata in credentials.items():
            for name in implemented:
                cardinality: Cardinality = specs[name][0]
                # An empty body, and one that does not decode: credentials are checked before the body.
                for body_kind, body in (("empty", b""), ("garbage", rng.randbytes(24))):
                    answer = await call_raw(channel, name, cardinality, body, metadata, timeout=5.0)
                    answers.append((kind, name, body_kind, answer.status, answer.message))
    finally:
        channel.close()
    print(f"bad credentials: {len(credentials)} kinds x {len(implemented)} RPCs x 2 bodies = {len(answers)}")
    let_through = [a[:4] for a in answers if a[3] != Status.UNAUTHENTICATED]
    assert not let_through, f"not refused as UNAUTHENTICATED: {let_through[:20]}"
    long_messages = [a[:3] for a in answers if len(a[4]) > 1200]
    assert not long_messages, long_messages
    revoked_messages = {a[4] for a in answers if a[0] == "revoked token"}
    assert all("revoked" in m for m in revoked_messages), revoked_messages
    # The real token still works.
    assert await _app_list_status(fault_server, real) == Status.OK


@pytest.fixture(scope="module")
def victim_and_probe(fault_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A deployed victim app with a function call of its own, and a warm container of another app whose
    credential the test holds."""
    directory = tmp_path_factory.mktemp("credentials")
    for name, source in (("victim.py", VICTIM_APP), ("probe.py", PROBE_APP)):
        result = run_modal(fault_server, "deploy", str(write_app(directory, name, source)))
        assert result.returncode == 0, result.output
    client = write_app(directory, "probe_client.py", PROBE_CLIENT)

    def run(*args: str) -> Any:
        result = run_python(fault_server, client, *args)
        assert result.returncode == 0, result.output
        line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
        return json.loads(line[len("RESULT ") :])

    headers = dict(pair.split(":", 1) for pair in run("faults-probe", "credential", "call").split(","))
    assert set(headers) == {"x-onshore-task-id", "x-onshore-task-secret"}, headers
    yield {"victim_function_id": run("faults-victim", "work", "id"), "container": headers}


async def _status(call: Any) -> Status:
    try:
        result = await call
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
    except GRPCError as exc:
        return exc.status
    return Status.OK


async def test_a_container_cannot_use_another_apps_functions_or_calls(
    fault_server: ServerProcess, victim_and_probe: dict[str, Any]
) -> None:
    real = fault_server.token_metadata
    creds = victim_and_probe["container"]
    function_id = victim_and_probe["victim_function_id"]
    host, port = host_port(fault_server)
    channel = Channel(host, port)
    stub = api_grpc.ModalClientStub(channel)
    try:
        # The victim's own call, made by its client.
        mapped = await stub.FunctionMap(
            api_pb2.FunctionMapRequest(
                function_id=function_id,
                function_call_type=api_pb2.FUNCTION_CALL_TYPE_UNARY,
                function_call_invocation_type=api_pb2.FUNCTION_CALL_INVOCATION_TYPE_ASYNC,
            ),
            metadata=real,
        )
        call_id = mapped.function_call_id
        # Positive control: the container's credential works for its own app's objects.
        own = await _status(stub.AppList(api_pb2.AppListRequest(), metadata=creds, timeout=5))
        assert own in (Status.OK, Status.PERMISSION_DENIED), own  # (a container's listing scope may change)
        own_hb = await _status(stub.ContainerHeartbeat(api_pb2.ContainerHeartbeatRequest(), metadata=creds))
        assert own_hb == Status.OK, f"the probe container's own credential was refused: {own_hb.name}"
        attempts = {
            "FunctionMap": stub.FunctionMap(
                api_pb2.FunctionMapRequest(
                    function_id=function_id, function_call_type=api_pb2.FUNCTION_CALL_TYPE_UNARY
                ),
                metadata=creds,
                timeout=5,
            ),
            "FunctionGetById": stub.FunctionGetById(
                api_pb2.FunctionGetByIdRequest(function_id=function_id), metadata=creds, timeout=5
            ),
            "FunctionBindParams": stub.FunctionBindParams(
                api_pb2.FunctionBindParamsRequest(function_id=function_id), metadata=creds, timeout=5
            ),
            "FunctionGetOutputs": stub.FunctionGetOutputs(
                api_pb2.FunctionGetOutputsRequest(function_call_id=call_id, timeout=0),
                metadata=creds,
                timeout=5,
            ),
            "FunctionPutInputs": stub.FunctionPutInputs(
                api_pb2.FunctionPutInputsRequest(function_call_id=call_id, function_id=function_id),
                metadata=creds,
                timeout=5,
            ),
            "FunctionRetryInputs": stub.FunctionRetryInputs(
                api_pb2.FunctionRetryInputsRequest(function_call_jwt="fc:" + call_id),
                metadata=creds,
                timeout=5,
            ),
            "FunctionCallCancel": stub.FunctionCallCancel(
                api_pb2.FunctionCallCancelRequest(function_call_id=call_id), metadata=creds, timeout=5
            ),
            "FunctionCallGetDataOut": _drain(
                stub.FunctionCallGetDataOut.open(metadata=creds, timeout=5),
                api_pb2.FunctionCallGetDataRequest(function_call_id=call_id),
            ),
            "FunctionCallPutDataOut": stub.FunctionCallPutDataOut(
                api_pb2.FunctionCallPutDataRequest(function_call_id=call_id), metadata=creds, timeout=5
            ),
        }
        statuses = {name: (await _status(call)).name for name, call in attempts.items()}
        # The victim's call is untouched: its own client still reads it.
        after = await _status(
            stub.FunctionGetOutputs(
                api_pb2.FunctionGetOutputsRequest(function_call_id=call_id, timeout=0),
                metadata=real,
                timeout=5,
            )
        )
    finally:
        channel.close()
    assert set(statuses.values()) == {"PERMISSION_DENIED"}, statuses
    assert after == Status.OK, after
    assert "Traceback" not in fault_server.log_text()


async def _drain(opened: Any, request: Any) -> None:
    async with opened as stream:
        await stream.send_message(request, end=True)
        async for _ in stream:
            pass


def _http(method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _with_query(url: str, change: dict[str, str | None]) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for key, value in change.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_the_blob_endpoint_refuses_bad_or_missing_signatures(fault_server: ServerProcess) -> None:
    real = fault_server.token_metadata
    content = b"blob content for the signature test"
    host, port = host_port(fault_server)
    channel = Channel(host, port)
    stub = api_grpc.ModalClientStub(channel)
    try:
        created = await stub.BlobCreate(api_pb2.BlobCreateRequest(content_length=len(content)), metadata=real)
        put_url = created.upload_url or created.upload_urls.items[0]
        assert put_url, created
        assert (await asyncio.to_thread(_http, "PUT", put_url, content))[0] == 200
        got = await stub.BlobGet(api_pb2.BlobGetRequest(blob_id=created.blob_id), metadata=real)
        get_url = got.download_url
    finally:
        channel.close()
    sig = dict(parse_qsl(urlsplit(get_url).query))["sig"]
    wrong = ("0" if sig[0] != "0" else "1") + sig[1:]
    other_blob = get_url.replace(created.blob_id, "bl-" + "Q" * 22)
    refused = {
        "GET without sig": ("GET", _with_query(get_url, {"sig": None}), None),
        "GET with a wrong sig": ("GET", _with_query(get_url, {"sig": wrong}), None),
        "GET with an empty sig": ("GET", _with_query(get_url, {"sig": ""}), None),
        "GET with a huge sig": ("GET", _with_query(get_url, {"sig": "a" * 6000}), None),
        "GET with the upload's sig": (
            "GET",
            _with_query(get_url, {"sig": dict(parse_qsl(urlsplit(put_url).query))["sig"]}),
            None,
        ),
        "GET of another blob with this sig": ("GET", other_blob, None),
        "PUT without sig": ("PUT", _with_query(put_url, {"sig": None}), b"overwritten"),
        "PUT with a wrong sig": ("PUT", _with_query(put_url, {"sig": wrong}), b"overwritten"),
        "PUT with the download's sig": ("PUT", _with_query(put_url, {"sig": sig}), b"overwritten"),
    }
    codes = {}
    for what, (method, url, data) in refused.items():
        code, _body = await asyncio.to_thread(_http, method, url, data)
        codes[what] = code
    assert set(codes.values()) == {403}, codes
    # The blob is unchanged and its real URL still works.
    assert await asyncio.to_thread(_http, "GET", get_url) == (200, content)
