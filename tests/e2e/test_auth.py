"""Auth end to end: every RPC needs a valid token or container credential, and a container's credential
reaches only its own app."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from google.protobuf import empty_pb2
from grpclib.client import Channel, ServiceMethod
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from modal_proto import api_grpc, api_pb2

from tests.conftest import REPO, ServerProcess, clean_env, run_modal, run_python

APPS = REPO / "tests" / "e2e" / "apps"
PROBE_APP = APPS / "apps_auth_probe.py"
DEPLOYED_APP = APPS / "apps_deployed.py"
APPS_CLIENT = APPS / "apps_client.py"

PROBE = "e2e-auth-probe"
VICTIM = "e2e-auth-victim"

# A script that makes one real client call and reports the exception it gets.
CALL_SCRIPT = """
import json, time, modal
start = time.monotonic()
try:
    modal.App.lookup("e2e-auth-anything", create_if_missing=True)
    outcome = {"type": "none", "message": ""}
except Exception as exc:
    outcome = {"type": type(exc).__name__, "message": str(exc)}
outcome["seconds"] = time.monotonic() - start
print("RESULT " + json.dumps(outcome), flush=True)
"""


def result_of(output: str) -> Any:
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT line in output:\n{output}"
    return json.loads(lines[-1][len("RESULT ") :])


def stub_for(server: ServerProcess) -> tuple[Channel, api_grpc.ModalClientStub]:
    url = urlparse(server.url)
    channel = Channel(url.hostname or "127.0.0.1", url.port)
    return channel, api_grpc.ModalClientStub(channel)


async def status_of(call: Awaitable[Any]) -> Status:
    try:
        await call
    except GRPCError as exc:
        return exc.status
    return Status.OK


def no_credentials_env(server: ServerProcess, tmp_path: Path) -> dict[str, str]:
    env = clean_env()
    env["MODAL_SERVER_URL"] = server.url
    env["MODAL_CONFIG_PATH"] = str(tmp_path / "no-such-modal.toml")  # ignore any ~/.modal.toml
    return env


# ---------------------------------------------------------------- client tokens
def test_wrong_token_secret_fails_fast_with_auth_error(server: ServerProcess, tmp_path: Path) -> None:
    env = server.env(MODAL_TOKEN_SECRET="as-not-the-right-secret")
    start = time.monotonic()
    result = run_modal(server, "app", "list", env=env, timeout=30)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert "token" in result.output.lower(), result.output  # the server's auth error, as the CLI prints it
    assert elapsed < 10, f"`modal app list` with a wrong token took {elapsed:.1f}s to fail"

    script = tmp_path / "call.py"
    script.write_text(CALL_SCRIPT)
    outcome = result_of(run_python(server, script, env=env, timeout=30).stdout)
    assert outcome["type"] == "AuthError", outcome
    assert outcome["seconds"] < 10, outcome


def test_unknown_token_id_fails_with_auth_error(server: ServerProcess, tmp_path: Path) -> None:
    script = tmp_path / "call.py"
    script.write_text(CALL_SCRIPT)
    env = server.env(MODAL_TOKEN_ID="ak-" + "x" * 22)
    outcome = result_of(run_python(server, script, env=env, timeout=30).stdout)
    assert outcome["type"] == "AuthError", outcome
    assert outcome["seconds"] < 10, outcome


def test_no_credentials_fail_with_auth_error(server: ServerProcess, tmp_path: Path) -> None:
    env = no_credentials_env(server, tmp_path)
    result = run_modal(server, "app", "list", env=env, timeout=30)
    assert result.returncode != 0
    assert "token" in result.output.lower(), result.output

    script = tmp_path / "call.py"
    script.write_text(CALL_SCRIPT)
    outcome = result_of(run_python(server, script, env=env, timeout=30).stdout)
    assert outcome["type"] == "AuthError", outcome


# The client refuses to send a call without a token; the server must refuse it too.
_BAD_CREDENTIALS = {
    "none": {},
    "wrong token secret": {"x-modal-token-id": "", "x-modal-token-secret": "as-wrong"},
    "unknown token": {"x-modal-token-id": "ak-" + "y" * 22, "x-modal-token-secret": "as-wrong"},
    "forged container": {"x-onshore-task-id": "ta-" + "z" * 22, "x-onshore-task-secret": "as-forged"},
}


@pytest.mark.parametrize("kind", list(_BAD_CREDENTIALS))
async def test_every_rpc_rejects_bad_credentials(server: ServerProcess, kind: str) -> None:
    metadata = dict(_BAD_CREDENTIALS[kind])
    if kind == "wrong token secret":
        metadata["x-modal-token-id"] = server.token["token_id"]
    channel, stub = stub_for(server)
    answered: dict[str, str] = {}
    try:
        for name, method in sorted(vars(stub).items()):
            if not isinstance(method, ServiceMethod) or name == "ClientHello":  # the one public RPC
                continue
            call: Any = method  # a UnaryUnaryMethod or UnaryStreamMethod: both are awaitable calls
            status = await status_of(call(method.request_type(), metadata=metadata, timeout=5))
            answered[name] = status.name
    finally:
        channel.close()
    assert len(answered) > 200, "the sweep did not find the service's RPCs"
    # Unimplemented RPCs may say so; everything else must be refused before it does anything.
    let_through = {n: s for n, s in answered.items() if s not in ("UNAUTHENTICATED", "UNIMPLEMENTED")}
    assert not let_through, f"RPCs that did not refuse {kind} credentials: {let_through}"
    core = [
        "AppList",
        "AppCreate",
        "AppStop",
        "FunctionGet",
        "FunctionMap",
        "SecretGetOrCreate",
        "SecretList",
        "AppGetLogs",
        "BlobCreate",
        "MountGetOrCreate",
        "FunctionGetInputs",
        "ContainerHeartbeat",
    ]
    assert all(answered[name] == "UNAUTHENTICATED" for name in core), {n: answered[n] for n in core}


async def test_client_hello_needs_no_token_but_a_wrong_token_is_refused(server: ServerProcess) -> None:
    channel, stub = stub_for(server)
    try:
        assert await status_of(stub.ClientHello(empty_pb2.Empty(), timeout=5)) == Status.OK
        wrong = {"x-modal-token-id": server.token["token_id"], "x-modal-token-secret": "as-wrong"}
        assert await status_of(stub.ClientHello(empty_pb2.Empty(), metadata=wrong, timeout=5)) == (
            Status.UNAUTHENTICATED
        )
    finally:
        channel.close()


def test_verbose_server_log_has_no_credentials(fresh_server: ServerProcess) -> None:
    fresh_server.extra_args.append("-v")
    fresh_server.start()
    result = run_modal(fresh_server, "app", "list")
    assert result.returncode == 0, result.output
    leaked = fresh_server.token["token_secret"] in fresh_server.log_text()
    assert not leaked, "the server's log shows a client's token secret (see its log file)"


# ---------------------------------------------------------------- container credentials
def _deploy(server: ServerProcess, path: Path) -> None:
    result = run_modal(server, "deploy", str(path))
    assert result.returncode == 0, result.output


def _app_id(server: ServerProcess, name: str) -> str:
    result = run_modal(server, "app", "list", "--json")
    assert result.returncode == 0, result.output
    rows = json.loads(result.stdout)
    ids = [a["app_id"] for a in rows if a["description"] == name and a["state"] == "deployed"]
    assert len(ids) == 1, (name, result.stdout)
    return str(ids[0])


def _apps_client(server: ServerProcess, *args: str) -> Any:
    result = run_python(server, APPS_CLIENT, *args)
    assert result.returncode == 0, result.output
    return result_of(result.stdout)


@pytest.fixture(scope="module")
def two_apps(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A deployed victim app, and a deployed probe app whose warm container handed over its credential."""
    victim = tmp_path_factory.mktemp("victim") / "victim.py"
    victim.write_text(
        DEPLOYED_APP.read_text().replace('APP_NAME = "e2e-apps-deployed"', f'APP_NAME = "{VICTIM}"')
    )
    _deploy(server, victim)
    _deploy(server, PROBE_APP)
    creds = _apps_client(server, "call", PROBE, "credential")
    headers = dict(pair.split(":", 1) for pair in creds["headers"].split(","))
    assert headers.get("x-onshore-task-id") == creds["task_id"], creds
    yield {
        "victim_id": _app_id(server, VICTIM),
        "victim_function_id": _apps_client(server, "function-id", VICTIM, "hello"),
        "probe_id": _app_id(server, PROBE),
        "task_id": creds["task_id"],
        "headers": headers,
    }


async def test_forged_container_secret_for_a_real_task_is_rejected(
    server: ServerProcess, two_apps: dict[str, Any]
) -> None:
    forged = {"x-onshore-task-id": two_apps["task_id"], "x-onshore-task-secret": "as-forged"}
    channel, stub = stub_for(server)
    try:
        calls = {
            "AppGetLayout": stub.AppGetLayout(
                api_pb2.AppGetLayoutRequest(app_id=two_apps["probe_id"]), metadata=forged, timeout=5
            ),
            "ContainerHeartbeat": stub.ContainerHeartbeat(
                api_pb2.ContainerHeartbeatRequest(), metadata=forged, timeout=5
            ),
            "AppList": stub.AppList(api_pb2.AppListRequest(), metadata=forged, timeout=5),
        }
        statuses = {name: (await status_of(call)).name for name, call in calls.items()}
        # A forged task secret next to a valid token is still refused: the container identity is checked.
        both = {**forged, **server.token_metadata}
        statuses["with token"] = (
            await status_of(stub.AppList(api_pb2.AppListRequest(), metadata=both, timeout=5))
        ).name
    finally:
        channel.close()
    assert set(statuses.values()) == {"UNAUTHENTICATED"}, statuses


async def test_container_credential_cannot_touch_another_app(
    server: ServerProcess, two_apps: dict[str, Any]
) -> None:
    creds, victim_id, victim_fn = two_apps["headers"], two_apps["victim_id"], two_apps["victim_function_id"]
    channel, stub = stub_for(server)
    try:
        # Positive control: the credential is valid for its own app.
        own = await status_of(
            stub.AppGetLayout(
                api_pb2.AppGetLayoutRequest(app_id=two_apps["probe_id"]), metadata=creds, timeout=5
            )
        )
        assert own == Status.OK, "the probe container's own credential was refused"
        attempts = {
            "AppStop": stub.AppStop(api_pb2.AppStopRequest(app_id=victim_id), metadata=creds, timeout=5),
            "AppClientDisconnect": stub.AppClientDisconnect(
                api_pb2.AppClientDisconnectRequest(app_id=victim_id), metadata=creds, timeout=5
            ),
            "AppPublish": stub.AppPublish(
                api_pb2.AppPublishRequest(
                    app_id=victim_id, name=VICTIM, app_state=api_pb2.APP_STATE_DEPLOYED
                ),
                metadata=creds,
                timeout=5,
            ),
            "FunctionPrecreate": stub.FunctionPrecreate(
                api_pb2.FunctionPrecreateRequest(app_id=victim_id, function_name="evil"),
                metadata=creds,
                timeout=5,
            ),
            "AppGetLayout": stub.AppGetLayout(
                api_pb2.AppGetLayoutRequest(app_id=victim_id), metadata=creds, timeout=5
            ),
            "AppGetLogs": stub.AppGetLogs(
                api_pb2.AppGetLogsRequest(app_id=victim_id, timeout=1), metadata=creds, timeout=5
            ),
            "AppFetchLogs": stub.AppFetchLogs(
                api_pb2.AppFetchLogsRequest(app_id=victim_id), metadata=creds, timeout=5
            ),
            "FunctionGet": stub.FunctionGet(
                api_pb2.FunctionGetRequest(app_name=VICTIM, object_tag="hello"), metadata=creds, timeout=5
            ),
            "FunctionGetById": stub.FunctionGetById(
                api_pb2.FunctionGetByIdRequest(function_id=victim_fn), metadata=creds, timeout=5
            ),
            "FunctionMap": stub.FunctionMap(
                api_pb2.FunctionMapRequest(
                    function_id=victim_fn, function_call_type=api_pb2.FUNCTION_CALL_TYPE_UNARY
                ),
                metadata=creds,
                timeout=5,
            ),
            "SecretDelete": stub.SecretDelete(
                api_pb2.SecretDeleteRequest(secret_id="st-" + "q" * 22), metadata=creds, timeout=5
            ),
        }
        statuses = {name: (await status_of(call)).name for name, call in attempts.items()}
    finally:
        channel.close()
    assert set(statuses.values()) == {"PERMISSION_DENIED"}, statuses

    # The victim is untouched: still deployed, and its function still answers.
    assert _app_id(server, VICTIM) == victim_id
    assert _apps_client(server, "call", VICTIM, "hello", "after") == "v1:after"
    # From inside the container, the real client gets the same answer.
    assert _apps_client(server, "call", PROBE, "lookup_other", VICTIM) == "PermissionDeniedError"


async def test_container_credential_cannot_heartbeat_another_app(
    server: ServerProcess, two_apps: dict[str, Any]
) -> None:
    # Heartbeats keep an ephemeral app alive: another app's container must not be able to send them.
    channel, stub = stub_for(server)
    try:
        status = await status_of(
            stub.AppHeartbeat(
                api_pb2.AppHeartbeatRequest(app_id=two_apps["victim_id"]),
                metadata=two_apps["headers"],
                timeout=5,
            )
        )
    finally:
        channel.close()
    assert status == Status.PERMISSION_DENIED, status


async def test_container_credential_looks_up_secrets_but_creates_and_lists_nothing(
    server: ServerProcess, two_apps: dict[str, Any]
) -> None:
    creds, probe_id = two_apps["headers"], two_apps["probe_id"]
    token = server.token_metadata
    name, missing = "e2e-auth-scope-secret", "e2e-auth-scope-never-made"
    create = api_pb2.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS
    channel, stub = stub_for(server)
    try:
        made = await stub.SecretGetOrCreate(
            api_pb2.SecretGetOrCreateRequest(
                deployment_name=name, object_creation_type=create, env_dict={"TOKEN": "hunter2"}
            ),
            metadata=token,
            timeout=5,
        )
        # Named secrets are workspace-wide, as on Modal: a container may look one up by name (its id and
        # key names; values never travel in a lookup).
        found = await stub.SecretGetOrCreate(
            api_pb2.SecretGetOrCreateRequest(deployment_name=name), metadata=creds, timeout=5
        )
        assert found.secret_id == made.secret_id and list(found.metadata.keys) == ["TOKEN"]
        assert b"hunter2" not in found.SerializeToString()
        # ...but nothing that would hand the values to code it controls, and nothing outside its app.
        attempts = {
            "image build with the secret": stub.ImageGetOrCreate(
                api_pb2.ImageGetOrCreateRequest(
                    app_id=probe_id,
                    image=api_pb2.Image(
                        dockerfile_commands=["FROM python:3.11-slim", "RUN env"], secret_ids=[found.secret_id]
                    ),
                ),
                metadata=creds,
                timeout=5,
            ),
            "function definition with the secret": stub.FunctionCreate(
                api_pb2.FunctionCreateRequest(
                    app_id=probe_id,
                    function=api_pb2.Function(function_name="evil", secret_ids=[found.secret_id]),
                ),
                metadata=creds,
                timeout=5,
            ),
            "class definition": stub.ClassCreate(
                api_pb2.ClassCreateRequest(app_id=probe_id), metadata=creds, timeout=5
            ),
            "named secret, create if missing": stub.SecretGetOrCreate(
                api_pb2.SecretGetOrCreateRequest(
                    deployment_name=missing,
                    object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
                    env_dict={"A": "1"},
                ),
                metadata=creds,
                timeout=5,
            ),
            "named secret, create": stub.SecretGetOrCreate(
                api_pb2.SecretGetOrCreateRequest(
                    deployment_name=missing, object_creation_type=create, env_dict={"A": "1"}
                ),
                metadata=creds,
                timeout=5,
            ),
            "secret list": stub.SecretList(api_pb2.SecretListRequest(), metadata=creds, timeout=5),
            "app create": stub.AppCreate(
                api_pb2.AppCreateRequest(description="e2e-auth-scope-app"), metadata=creds, timeout=5
            ),
            "app create if missing": stub.AppGetOrCreate(
                api_pb2.AppGetOrCreateRequest(
                    app_name="e2e-auth-scope-app",
                    object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
                ),
                metadata=creds,
                timeout=5,
            ),
            "lifecycle of another app": stub.AppGetLifecycle(
                api_pb2.AppGetLifecycleRequest(app_id=two_apps["victim_id"]), metadata=creds, timeout=5
            ),
            "another app by deployment name": stub.AppGetByDeploymentName(
                api_pb2.AppGetByDeploymentNameRequest(name=VICTIM), metadata=creds, timeout=5
            ),
            "image build for no app": stub.ImageGetOrCreate(
                api_pb2.ImageGetOrCreateRequest(
                    image=api_pb2.Image(dockerfile_commands=["FROM python:3.11-slim", "RUN true"])
                ),
                metadata=creds,
                timeout=5,
            ),
            "deployment history of another app": stub.AppDeploymentHistory(
                api_pb2.AppDeploymentHistoryRequest(app_id=two_apps["victim_id"]), metadata=creds, timeout=5
            ),
        }
        statuses = {what: (await status_of(call)).name for what, call in attempts.items()}
        # A container lists its own app only.
        listed = await stub.AppList(api_pb2.AppListRequest(), metadata=creds, timeout=5)
        everything = await stub.AppList(api_pb2.AppListRequest(), metadata=token, timeout=5)
        still_missing = await status_of(
            stub.SecretGetOrCreate(api_pb2.SecretGetOrCreateRequest(deployment_name=missing), metadata=token)
        )
    finally:
        channel.close()
    assert set(statuses.values()) == {"PERMISSION_DENIED"}, statuses
    assert [a.app_id for a in listed.apps] == [probe_id]
    assert len(everything.apps) > 1
    assert still_missing == Status.NOT_FOUND, "a container's refused request created a secret"
    assert "e2e-auth-scope-app" not in run_modal(server, "app", "list").output


async def test_container_credential_dies_with_its_container(server: ServerProcess, tmp_path: Path) -> None:
    name = "e2e-auth-shortlived"
    app = tmp_path / "shortlived.py"
    app.write_text(PROBE_APP.read_text().replace(f'modal.App("{PROBE}")', f'modal.App("{name}")'))
    _deploy(server, app)
    app_id = _app_id(server, name)
    creds = _apps_client(server, "call", name, "credential")
    headers = dict(pair.split(":", 1) for pair in creds["headers"].split(","))
    channel, stub = stub_for(server)
    try:
        layout = api_pb2.AppGetLayoutRequest(app_id=app_id)
        assert await status_of(stub.AppGetLayout(layout, metadata=headers, timeout=5)) == Status.OK
        stopped = run_modal(server, "app", "stop", name, "--yes")
        assert stopped.returncode == 0, stopped.output
        deadline = time.monotonic() + 10
        status = Status.OK
        while time.monotonic() < deadline:
            status = await status_of(stub.AppGetLayout(layout, metadata=headers, timeout=5))
            if status != Status.OK:
                break
            await asyncio.sleep(0.2)
    finally:
        channel.close()
    assert status == Status.UNAUTHENTICATED, f"a stopped container's credential still answers {status.name}"
