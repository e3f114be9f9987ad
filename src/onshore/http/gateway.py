"""The web gateway: an ASGI app on the HTTP port that turns requests to web endpoints into function calls.

A request becomes one input of the endpoint's function (its scope, pickled); its body and events go to the
container on the call's data-in stream, and the app's ASGI messages come back on its data-out stream, each
sent on to the client as it arrives. Anything that is not an endpoint's goes to the next app (blobs, pages).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any

from onshore.errors import OnshoreError
from onshore.models import OutputRecord
from onshore.protocol.asgi import failure_message, parse_chunk, request_chunk, response_message, web_input
from onshore.services.blobs import BlobService
from onshore.services.call_state import (
    INVOCATION_SYNC,
    STATUS_SUCCESS,
    STATUS_TIMEOUT,
    CallState,
)
from onshore.services.calls import CallService
from onshore.services.functions import FunctionService
from onshore.services.invoke import InvokeService
from onshore.services.web import RESERVED_LABELS, WEBHOOK_WEB_SERVER, WebRoute, WebService

log = logging.getLogger("onshore.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
ProxyAuth = Callable[[str, str], bool]

CALL_TYPE_UNARY = 1  # FunctionCallType.FUNCTION_CALL_TYPE_UNARY
ROOM_WAIT_SECONDS = 30.0


class _Aborted(Exception):
    """The response had started when the call failed: the connection is dropped, the client sees it cut."""


async def json_response(
    send: Send, status: int, error: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _refuse(scope: Scope, send: Send, status: int, error: str, websocket_code: int) -> None:
    """Answer a request the gateway does not pass on: a JSON error, or a WebSocket closed with a code."""
    if scope["type"] == "http":
        await json_response(send, status, error)
    else:
        await send({"type": "websocket.close", "code": websocket_code})


def _failure(output: OutputRecord | None) -> tuple[int, str]:
    """The HTTP status (and message) for a call that ended without a response."""
    if output is None:
        return 502, "The request ended without an answer"
    if output.status == STATUS_SUCCESS:
        return 502, "The web endpoint returned without sending a response"
    if output.status == STATUS_TIMEOUT:
        return 504, "The request ran past the function's timeout"
    if output.data_format:  # the container's own report: the app raised
        return 500, "Internal Server Error: the app raised an exception (see `modal app logs`)"
    # The server ended the input: its container stopped mid-request, or none could start to take it.
    reason = failure_message(output.result)
    if not output.task_id:
        return 503, f"No container could take the request: {reason}"
    return 502, f"The web endpoint's container stopped before it answered: {reason}"


class Gateway:
    def __init__(
        self,
        web: WebService,
        functions: FunctionService,
        invoke: InvokeService,
        calls: CallService,
        blobs: BlobService,
        proxy_auth: ProxyAuth,
        fallback: ASGIApp,
    ) -> None:
        self._web = web
        self._functions = functions
        self._invoke = invoke
        self._calls = calls
        self._blobs = blobs
        self._proxy_auth = proxy_auth
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._fallback(scope, receive, send)
            return
        headers = {bytes(k).lower(): bytes(v) for k, v in scope.get("headers", [])}
        found = self._match(scope, headers)
        if found is None:
            first = str(scope["path"]).lstrip("/").split("/", 1)[0]
            if first in RESERVED_LABELS or first == "":
                await self._fallback(scope, receive, send)
            else:
                await _refuse(scope, send, 404, f"No web endpoint is served at /{first}", 1008)
            return
        route, app_scope = found
        if route.requires_proxy_auth and not self._authorized(headers):
            error = "This endpoint needs a proxy token (Modal-Key and Modal-Secret headers)"
            await _refuse(scope, send, 401, error, 1008)
            return
        try:
            call = self._start(route, app_scope)
        except OnshoreError as exc:
            await _refuse(scope, send, 503, str(exc), 1011)
            return
        completed = False
        try:
            if scope["type"] == "http":
                completed = await self._http(call, receive, send)
            else:
                completed = await self._websocket(call, receive, send)
        finally:
            if call.unfinished and not completed:  # the client went away: the input ends in the container
                self._calls.cancel_call(call, terminate_containers=False)
            self._calls.forget(call)

    # ---------------------------------------------------------------- routing
    def _match(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[WebRoute, dict[str, Any]] | None:
        host = headers.get(b"host", b"").decode("latin-1")
        path = str(scope["path"])
        label = self._web.label_of_host(host)
        root_path = ""
        if label:
            route = self._web.resolve(label)
        else:
            label = path.lstrip("/").split("/", 1)[0]
            route = self._web.resolve(label) if label else None
            if route is not None:
                prefix = f"/{label}"
                if route.kind == WEBHOOK_WEB_SERVER:
                    path = path[len(prefix) :] or "/"  # a server of its own knows nothing of the prefix
                else:
                    root_path = prefix
                    if path == prefix:
                        path = prefix + "/"
        if route is None:
            return None
        app_headers = [(bytes(k), bytes(v)) for k, v in scope.get("headers", [])]
        if scope["type"] == "websocket":
            # The gateway ends the WebSocket itself: extensions (compression) are between it and the client.
            app_headers = [(k, v) for k, v in app_headers if k.lower() != b"sec-websocket-extensions"]
        app_scope: dict[str, Any] = {
            "type": scope["type"],
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": scope.get("http_version", "1.1"),
            "scheme": scope.get("scheme", "http"),
            "path": path,
            "raw_path": path.encode(),
            "query_string": bytes(scope.get("query_string", b"")),
            "root_path": root_path,
            "headers": app_headers,
        }
        if scope.get("client"):
            app_scope["client"] = tuple(scope["client"])
        if scope.get("server"):
            app_scope["server"] = tuple(scope["server"])
        if scope["type"] == "http":
            app_scope["method"] = scope["method"]
        else:
            app_scope["subprotocols"] = list(scope.get("subprotocols", []))
        return route, app_scope

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        key = headers.get(b"modal-key", b"").decode("latin-1")
        secret = headers.get(b"modal-secret", b"").decode("latin-1")
        return bool(key and secret) and self._proxy_auth(key, secret)

    def _start(self, route: WebRoute, app_scope: dict[str, Any]) -> CallState:
        fn = self._functions.get(route.function_id)
        self._invoke.check_runnable(fn)
        payload = web_input(app_scope, route.method_name)
        call, items = self._invoke.start(fn, CALL_TYPE_UNARY, INVOCATION_SYNC, [(0, payload)])
        for item in items:
            item.retryable = False  # its body was streamed once: a second attempt would not see it
        return call

    # ---------------------------------------------------------------- the exchange
    async def _to_app(self, call: CallState, message: Message) -> bool:
        """Queue a client message for the app, waiting while the app is far behind; False once the call
        ended."""
        stream = call.data_in
        while not await stream.wait_room(ROOM_WAIT_SECONDS):
            if stream.closed or not call.unfinished:
                return False
        if not call.unfinished:
            return False
        index = stream.next_index
        stream.put([(index, request_chunk(index, dict(message)))])
        return True

    async def _message(self, raw: bytes) -> Message | None:
        data, blob_id = parse_chunk(raw)
        if blob_id:
            data = await asyncio.to_thread(self._blobs.read, blob_id)
        return response_message(data)

    async def _from_app(
        self,
        call: CallState,
        send: Send,
        done: Callable[[Message], bool],
        gone: asyncio.Event,
        failure: Callable[[Send, int, str], Awaitable[None]],
    ) -> bool:
        """Send the app's messages to the client until one ends the exchange (`done`), the client is gone,
        or the call ends; a call that ends first is answered with an error. Whether the exchange ended
        (False: the client went away first)."""
        started = False
        last = 0
        while True:
            fresh = call.data_out.after(last)
            if fresh:
                for index, raw in fresh:
                    last = index
                    call.data_out.release_through(index)
                    message = await self._message(raw)
                    if message is None:
                        continue
                    if message["type"] in ("http.response.start", "websocket.accept", "websocket.close"):
                        started = True
                    await send(message)
                    if done(message):
                        return True
                continue  # look again before waiting: more may have come while this sent
            if gone.is_set():
                return False
            if not call.unfinished and not call.data_out.after(last):
                output = call.outputs[0] if call.outputs else None
                if started:
                    status = output.status if output else 0
                    raise _Aborted(f"call {call.function_call_id} ended mid-response (status {status})")
                code, error = _failure(output)
                await failure(send, code, error)
                return True
            await call.wait_change(30.0)

    async def _http(self, call: CallState, receive: Receive, send: Send) -> bool:
        gone = asyncio.Event()

        async def pump_in() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.request":
                    if not await self._to_app(call, message):
                        return
                elif message["type"] == "http.disconnect":
                    await self._to_app(call, message)
                    gone.set()
                    call.notify()
                    return

        def done(message: Message) -> bool:
            return message["type"] == "http.response.body" and not message.get("more_body", False)

        return await self._exchange(call, pump_in, send, done, gone, _http_failure)

    async def _websocket(self, call: CallState, receive: Receive, send: Send) -> bool:
        gone = asyncio.Event()

        async def pump_in() -> None:
            while True:
                message = await receive()
                if message["type"] in ("websocket.connect", "websocket.receive"):
                    if not await self._to_app(call, message):
                        return
                elif message["type"] == "websocket.disconnect":
                    await self._to_app(call, message)
                    gone.set()
                    call.notify()
                    return

        def done(message: Message) -> bool:
            return bool(message["type"] == "websocket.close")

        return await self._exchange(call, pump_in, send, done, gone, _websocket_failure)

    async def _exchange(
        self,
        call: CallState,
        pump_in: Callable[[], Coroutine[Any, Any, None]],
        send: Send,
        done: Callable[[Message], bool],
        gone: asyncio.Event,
        failure: Callable[[Send, int, str], Awaitable[None]],
    ) -> bool:
        reader = asyncio.create_task(pump_in(), name=f"web-in-{call.function_call_id}")
        try:
            return await self._from_app(call, send, done, gone, failure)
        except _Aborted as exc:
            log.info("%s", exc)
            raise
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader


async def _http_failure(send: Send, code: int, error: str) -> None:
    await json_response(send, code, error)


async def _websocket_failure(send: Send, code: int, error: str) -> None:
    await send({"type": "websocket.close", "code": 1011, "reason": error[:120]})
