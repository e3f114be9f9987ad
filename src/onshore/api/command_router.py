"""gRPC handlers of the task command router (the service the client runs commands in containers through)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

from modal_proto import api_pb2
from modal_proto import task_command_router_pb2 as tcr

from onshore.api.base import Principal
from onshore.errors import InvalidArgument, PermissionDenied, Unauthenticated, Unimplemented
from onshore.runtimes.base import (
    EXEC_DEVNULL,
    EXEC_PIPE,
    EXEC_TO_STDOUT,
    FD_STDERR,
    FD_STDOUT,
    ExecSpec,
    PtySize,
)
from onshore.services.execs import ExecService, RouterTokens

# The user-facing feature behind the command router's RPCs Onshore does not implement.
ROUTER_FEATURES = [
    ("Sandbox", "sandboxes (modal.Sandbox) are"),
    ("TaskContainer", "sandbox sidecar containers are"),
    ("TaskSnapshot", "snapshots are"),
    ("TaskMount", "mounting images into a running container is"),
    ("TaskUnmount", "mounting images into a running container is"),
    ("TaskReloadVolumes", "volumes (modal.Volume) are"),
    ("TaskSet", "network access policies are"),
    ("TaskExecStdinWriteStream", "streaming a file to a command's stdin is"),
]

_STDOUT = {
    tcr.TASK_EXEC_STDOUT_CONFIG_PIPE: EXEC_PIPE,
    tcr.TASK_EXEC_STDOUT_CONFIG_DEVNULL: EXEC_DEVNULL,
}
_STDERR = {
    tcr.TASK_EXEC_STDERR_CONFIG_PIPE: EXEC_PIPE,
    tcr.TASK_EXEC_STDERR_CONFIG_DEVNULL: EXEC_DEVNULL,
    tcr.TASK_EXEC_STDERR_CONFIG_STDOUT: EXEC_TO_STDOUT,
}
_FDS = {
    tcr.TASK_EXEC_STDIO_FILE_DESCRIPTOR_STDOUT: FD_STDOUT,
    tcr.TASK_EXEC_STDIO_FILE_DESCRIPTOR_STDERR: FD_STDERR,
}


class RouterAuthenticator:
    """Callers of the command router hold a token from TaskGetCommandRouterAccess (authorization: Bearer)."""

    def __init__(self, tokens: RouterTokens) -> None:
        self._tokens = tokens

    def __call__(self, metadata: Any, rpc: str) -> Principal:
        value = str(metadata.get("authorization", ""))
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("No command-router token: get one with TaskGetCommandRouterAccess")
        return Principal("exec", granted_task_id=self._tokens.verify(token.strip()))


def _exec_spec(req: Any) -> ExecSpec:
    if req.container_id:
        raise Unimplemented("Running commands in a sandbox sidecar container: sidecars are not supported yet")
    if len(req.secret_ids) or len(req.secret_sources):
        raise Unimplemented("Secrets for exec'd commands are not supported yet; pass variables with env")
    if req.stdout_config not in _STDOUT or req.stderr_config not in _STDERR:
        raise InvalidArgument(f"Unknown stdio configuration ({req.stdout_config}, {req.stderr_config})")
    pty = None
    info = req.pty_info
    if req.HasField("pty_info") and (info.enabled or info.pty_type != api_pb2.PTYInfo.PTY_TYPE_UNSPECIFIED):
        env = {
            name: value
            for name, value in (
                ("TERM", info.env_term),
                ("COLORTERM", info.env_colorterm),
                ("TERM_PROGRAM", info.env_term_program),
            )
            if value
        }
        pty = PtySize(rows=info.winsz_rows, cols=info.winsz_cols, env=env)
    # runtime_debug asks for debugging of Modal's own container runtime (a client-internal setting): it has no
    # counterpart here.
    return ExecSpec(
        argv=list(req.command_args),
        env=dict(req.env),
        workdir=req.workdir,
        pty=pty,
        stdout=_STDOUT[req.stdout_config],
        stderr=_STDERR[req.stderr_config],
    )


class CommandRouterHandlers:
    def __init__(self, execs: ExecService) -> None:
        self._execs = execs

    @staticmethod
    def _check(req: Any, who: Principal) -> None:
        if not req.task_id or req.task_id != who.granted_task_id:
            task = req.task_id or "(no id)"
            raise PermissionDenied(f"This command-router token is not for container {task}")

    async def TaskExecStart(self, req: tcr.TaskExecStartRequest, who: Principal) -> tcr.TaskExecStartResponse:
        self._check(req, who)
        await self._execs.start(req.task_id, req.exec_id, _exec_spec(req), int(req.timeout_secs))
        return tcr.TaskExecStartResponse()

    async def TaskExecStdioRead(
        self, req: tcr.TaskExecStdioReadRequest, who: Principal
    ) -> AsyncIterator[tcr.TaskExecStdioReadResponse]:
        self._check(req, who)
        fd = _FDS.get(req.file_descriptor)
        if fd is None:
            raise InvalidArgument(f"Unknown file descriptor {req.file_descriptor}")
        async for chunk in self._execs.read(req.task_id, req.exec_id, fd, int(req.offset)):
            yield tcr.TaskExecStdioReadResponse(data=chunk)

    async def TaskExecStdinWrite(
        self, req: tcr.TaskExecStdinWriteRequest, who: Principal
    ) -> tcr.TaskExecStdinWriteResponse:
        self._check(req, who)
        await self._execs.write_stdin(req.task_id, req.exec_id, int(req.offset), bytes(req.data), req.eof)
        return tcr.TaskExecStdinWriteResponse()

    async def TaskExecStdinStatus(
        self, req: tcr.TaskExecStdinStatusRequest, who: Principal
    ) -> tcr.TaskExecStdinStatusResponse:
        self._check(req, who)
        written, closed = self._execs.stdin_status(req.task_id, req.exec_id)
        return tcr.TaskExecStdinStatusResponse(num_bytes_written=written, closed=closed)

    async def TaskExecPoll(self, req: tcr.TaskExecPollRequest, who: Principal) -> tcr.TaskExecPollResponse:
        self._check(req, who)
        return _exit_status(tcr.TaskExecPollResponse(), self._execs.poll(req.task_id, req.exec_id))

    async def TaskExecWait(self, req: tcr.TaskExecWaitRequest, who: Principal) -> tcr.TaskExecWaitResponse:
        self._check(req, who)
        rc = await self._execs.wait(req.task_id, req.exec_id)
        return _exit_status(tcr.TaskExecWaitResponse(), rc)


_ExitResponse = TypeVar("_ExitResponse", tcr.TaskExecPollResponse, tcr.TaskExecWaitResponse)


def _exit_status(resp: _ExitResponse, rc: int | None) -> _ExitResponse:
    """Fill a response's exit_status: the exit code, or the signal that killed it; nothing while it runs."""
    if rc is not None:
        if rc < 0:
            resp.signal = -rc
        else:
            resp.code = rc
    return resp
