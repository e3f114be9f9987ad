"""The gRPC router: authenticates every call, dispatches it to one domain handler, maps errors to statuses."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpclib.const
from grpclib import GRPCError
from grpclib.const import Status
from modal_proto import api_grpc

from onshore import errors
from onshore.api.transport import receive_request
from onshore.api.validation import check_request
from onshore.services.containers import TASK_ID_HEADER, TASK_SECRET_HEADER, ContainerService, Task
from onshore.services.tokens import TokenService

log = logging.getLogger("onshore.api")

# The largest request message read. The client sends bigger payloads as blobs: a file of 4 MiB or more
# (LARGE_FILE_LIMIT), a function argument or result over 2 MiB (MAX_OBJECT_SIZE_BYTES). A map sends up to 49
# inputs in one request (MAP_INVOCATION_CHUNK_SIZE), each up to 2 MiB inline: about 98 MiB at most.
MAX_REQUEST_BYTES = 128 * 1024 * 1024
# The client series whose protocol (modal_proto) this server implements; pinned in pyproject.toml.
SUPPORTED_CLIENT_SERIES = "1.6."

_STATUS = {
    errors.NotFound: Status.NOT_FOUND,
    errors.AlreadyExists: Status.ALREADY_EXISTS,
    errors.InvalidArgument: Status.INVALID_ARGUMENT,
    errors.Conflict: Status.FAILED_PRECONDITION,
    errors.PermissionDenied: Status.PERMISSION_DENIED,
    errors.Unauthenticated: Status.UNAUTHENTICATED,
    errors.ResourceExhausted: Status.RESOURCE_EXHAUSTED,
    errors.Unimplemented: Status.UNIMPLEMENTED,
    errors.Unavailable: Status.UNAVAILABLE,
}


def status_for(exc: errors.OnshoreError) -> Status:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return Status.FAILED_PRECONDITION


@dataclass
class Principal:
    """Who is calling: a client holding a token, or a container holding its own credential."""

    kind: str  # "client" | "container" | "anonymous" | "exec" (a holder of a command-router token)
    token_id: str = ""
    task: Task | None = None
    client_version: str = ""
    peer_host: str = ""  # the caller's address ("" over the unix socket)
    granted_task_id: str = ""  # kind "exec": the container its command-router token grants access to

    @property
    def is_container(self) -> bool:
        return self.task is not None

    def require_app(self, app_id: str) -> None:
        """A container may touch only its own app's objects."""
        if self.task is not None and app_id != self.task.app_id:
            raise errors.PermissionDenied("A container can only use objects of its own app")

    def require_client(self, action: str) -> None:
        """What only a client's token may do: a container's credential defines and creates nothing."""
        if self.task is not None:
            raise errors.PermissionDenied(
                f"A container's credential cannot {action}; use a client token (MODAL_TOKEN_ID/SECRET)"
            )


# The user-facing feature behind families of RPCs Onshore does not implement yet.
_FEATURES = [
    ("SharedVolume", "network file systems (modal.NetworkFileSystem) are"),
    ("Volume", "volumes (modal.Volume) are"),
    ("Sandbox", "sandboxes (modal.Sandbox) are"),
    # The client asks for an input-plane token first when it creates a (V2) sandbox, e.g. for `modal shell`.
    ("AuthTokenGet", "sandboxes (modal.Sandbox; `modal shell` of a function or image) are"),
    ("Queue", "queues (modal.Queue) are"),
    ("Dict", "dicts (modal.Dict) are"),
    ("Proxy", "proxies are"),
    ("Cluster", "clusters are"),
    ("Webhook", "web endpoints are"),
    ("Environment", "environments other than 'main' are"),
]

# RPCs a caller may make before it has credentials.
_PUBLIC_RPCS = {"ClientHello"}


class Authenticator:
    def __init__(self, tokens: TokenService, containers: ContainerService) -> None:
        self._tokens = tokens
        self._containers = containers

    def __call__(self, metadata: Any, rpc: str) -> Principal:
        version = str(metadata.get("x-modal-client-version", ""))
        if version and not version.startswith(SUPPORTED_CLIENT_SERIES):
            raise errors.Conflict(
                f"This Onshore server speaks the protocol of the modal client {SUPPORTED_CLIENT_SERIES}x "
                f"series; this client is {errors.bounded(version, 40)}. Install a matching client: "
                "pip install 'modal>=1.6,<1.7'"
            )
        task_id = metadata.get(TASK_ID_HEADER)
        if task_id:
            task = self._containers.authenticate(str(task_id), str(metadata.get(TASK_SECRET_HEADER, "")))
            return Principal("container", task=task, client_version=version)
        token_id = metadata.get("x-modal-token-id")
        if token_id:
            self._tokens.verify(str(token_id), str(metadata.get("x-modal-token-secret", "")))
            return Principal("client", token_id=str(token_id), client_version=version)
        if rpc in _PUBLIC_RPCS:
            return Principal("anonymous", client_version=version)
        raise errors.Unauthenticated(
            'No credentials: set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET (run `eval "$(onshore env)"`)'
        )


def _rpc_table(service: type[Any]) -> dict[str, grpclib.const.Handler]:
    """Every RPC of a service definition (a grpclib *Base class), with its cardinality and message types."""

    async def placeholder(stream: Any) -> None:  # pragma: no cover - replaced below
        raise GRPCError(Status.UNIMPLEMENTED)

    names = sorted(service.__abstractmethods__)
    shell = type("Shell", (service,), {name: placeholder for name in names})()
    return dict(shell.__mapping__())


AuthFunction = Callable[[Any, str], Principal]  # (request metadata, RPC name) -> who is calling


class Router:
    """Merges the domain handlers into one grpclib service; what no handler implements is UNIMPLEMENTED.

    By default it serves the client's API (api_grpc.ModalClientBase); `service` and `features` let it serve
    another service definition (the task command router) with its own authentication.
    """

    def __init__(
        self,
        handlers: list[object],
        auth: AuthFunction,
        service: type[Any] = api_grpc.ModalClientBase,
        features: list[tuple[str, str]] | None = None,
    ) -> None:
        self._auth = auth
        self._features = _FEATURES if features is None else features
        self._unimplemented_logged: set[str] = set()
        self._mapping: dict[str, grpclib.const.Handler] = {}
        self.implemented: set[str] = set()
        for path, spec in _rpc_table(service).items():
            name = path.rsplit("/", 1)[1]
            method = None
            for handler in handlers:
                method = getattr(handler, name, None)
                if method is not None:
                    break
            if method is None:
                wrapped = self._unimplemented(name)
            else:
                self.implemented.add(name)
                if spec.cardinality == grpclib.const.Cardinality.UNARY_STREAM:
                    wrapped = self._unary_stream(name, method)
                elif spec.cardinality == grpclib.const.Cardinality.UNARY_UNARY:
                    wrapped = self._unary_unary(name, method)
                else:
                    raise TypeError(f"{name}: client-streaming RPCs are not routed; implement it on its own")
            self._mapping[path] = grpclib.const.Handler(
                wrapped, spec.cardinality, spec.request_type, spec.reply_type
            )

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return self._mapping

    async def _begin(self, name: str, stream: Any) -> tuple[Any, Principal]:
        principal = self._auth(stream.metadata, name)
        address = stream.peer.addr()
        if isinstance(address, tuple) and address:
            principal.peer_host = str(address[0])
        request = await receive_request(stream, name, MAX_REQUEST_BYTES)
        if request is None:
            raise errors.InvalidArgument(f"{name}: empty request")
        check_request(name, request)
        return request, principal

    def _unary_unary(self, name: str, method: Callable[..., Any]) -> Callable[[Any], Any]:
        async def handle(stream: Any) -> None:
            with _translate_errors(name):
                request, principal = await self._begin(name, stream)
                response = await method(request, principal)
                await stream.send_message(response)

        return handle

    def _unary_stream(self, name: str, method: Callable[..., AsyncIterator[Any]]) -> Callable[[Any], Any]:
        if not inspect.isasyncgenfunction(method):
            raise TypeError(f"{name} streams responses: its handler must be an async generator")

        async def handle(stream: Any) -> None:
            with _translate_errors(name):
                request, principal = await self._begin(name, stream)
                async for response in method(request, principal):
                    await stream.send_message(response)

        return handle

    def _unimplemented(self, name: str) -> Callable[[Any], Any]:
        feature = next((f for prefix, f in self._features if name.startswith(prefix)), "")
        message = f"Onshore does not implement {name} yet" + (
            f": {feature} not supported yet" if feature else ""
        )

        async def handle(stream: Any) -> None:
            if name not in self._unimplemented_logged:
                self._unimplemented_logged.add(name)
                log.warning("unimplemented RPC called: %s", name)
            raise GRPCError(Status.UNIMPLEMENTED, message)

        return handle


class _translate_errors:
    """Context manager: domain errors become their gRPC status, their message cut to a bounded length (a
    long trailer costs the server time to encode); a bug becomes INTERNAL, logged once here."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, GRPCError | asyncio.CancelledError):
            return
        if isinstance(exc, errors.OnshoreError):
            status = status_for(exc)
            if status in (Status.INVALID_ARGUMENT, Status.RESOURCE_EXHAUSTED):
                # The caller's mistake: one short line, no traceback.
                log.info("%s refused (%s): %s", self._name, status.name, errors.bounded(str(exc), 200))
            raise GRPCError(status, errors.bounded(str(exc))) from None
        if isinstance(exc, Exception):
            log.error("%s failed", self._name, exc_info=exc)
            raise GRPCError(
                Status.INTERNAL, f"Onshore server error in {self._name}: {type(exc).__name__}"
            ) from None
