"""Web endpoints in the protocol: their configs in definitions, and the ASGI messages of a request as the
container's web wrapper exchanges them (a pickled scope as the input, then DataChunks of api_pb2.Asgi)."""

from __future__ import annotations

import pickle
from typing import Any

from modal_proto import api_pb2

from onshore.models import FunctionRecord
from onshore.services.web import WebEndpoint, WebService, label_of_url

MessageDict = dict[str, Any]


def web_endpoints(fn: Any) -> list[WebEndpoint]:
    """The web endpoints a definition (api_pb2.Function) declares: on the function or a class's methods."""
    found = []
    if fn.webhook_config.type:
        found.append(_endpoint("", fn.webhook_config))
    for name, method in sorted(fn.method_definitions.items()):
        if method.webhook_config.type:
            found.append(_endpoint(name, method.webhook_config))
    return found


def restore_web_routes(web: WebService, live: list[FunctionRecord]) -> int:
    """After a restart: route the endpoints of live apps' functions again, under the labels they were given
    (the last part of each stored URL). How many were routed."""
    count = 0
    for record in live:
        if not record.definition or record.parent_function_id:
            continue
        fn = api_pb2.Function.FromString(record.definition)
        planned = []
        for endpoint in web_endpoints(fn):
            url = (
                fn.web_url
                if not endpoint.method_name
                else fn.method_definitions[endpoint.method_name].web_url
            )
            if url:
                planned.append((endpoint, label_of_url(url)))
        web.register(record.function_id, record.app_id, planned)
        count += len(planned)
    return count


def _endpoint(method_name: str, config: Any) -> WebEndpoint:
    return WebEndpoint(
        method_name=method_name,
        kind=int(config.type),
        requested_label=config.requested_suffix,
        requires_proxy_auth=bool(config.requires_proxy_auth),
    )


def web_refusals(fn: Any) -> list[str]:
    """What a web endpoint's config asks for that Onshore does not do."""
    out = []
    configs = [("", fn.webhook_config)] + [(n, m.webhook_config) for n, m in fn.method_definitions.items()]
    for name, config in configs:
        if config.type and config.custom_domains:
            where = f"web endpoint method '{name}'" if name else "a web endpoint"
            out.append(f"{where} asks for custom_domains=, which Onshore does not serve (use label=)")
    return out


def set_web_urls(fn: Any, urls: dict[str, str]) -> None:
    """Write each endpoint's URL (by method name; "" for the function) into the definition."""
    for name, url in urls.items():
        target = fn if not name else fn.method_definitions[name]
        target.web_url = url
        target.web_url_info.CopyFrom(api_pb2.WebUrlInfo())


def web_input(scope: MessageDict, method_name: str) -> bytes:
    """The FunctionInput of one web request: the scope, pickled as the call's arguments."""
    args = pickle.dumps(((scope,), {}), protocol=4)
    return bytes(
        api_pb2.FunctionInput(
            args=args, data_format=api_pb2.DATA_FORMAT_PICKLE, method_name=method_name
        ).SerializeToString()
    )


def _pairs(flat: Any) -> list[tuple[bytes, bytes]]:
    items = list(flat)
    return list(zip(items[::2], items[1::2], strict=False))


def request_chunk(index: int, message: MessageDict) -> bytes:
    """A DataChunk (serialized) carrying a message from the web client to the app."""
    kind = message["type"]
    asgi = api_pb2.Asgi()
    if kind == "http.request":
        asgi.http_request.body = bytes(message.get("body", b""))
        asgi.http_request.more_body = bool(message.get("more_body", False))
    elif kind == "http.disconnect":
        asgi.http_disconnect.SetInParent()
    elif kind == "websocket.connect":
        asgi.websocket_connect.SetInParent()
    elif kind == "websocket.receive":
        if message.get("bytes") is not None:
            asgi.websocket_receive.bytes = bytes(message["bytes"])
        else:
            asgi.websocket_receive.text = str(message.get("text") or "")
    elif kind == "websocket.disconnect":
        asgi.websocket_disconnect.code = int(message.get("code", 1005))
    else:
        raise ValueError(f"not a message from the web client: {kind}")
    chunk = api_pb2.DataChunk(
        data_format=api_pb2.DATA_FORMAT_ASGI, index=index, data=asgi.SerializeToString()
    )
    return bytes(chunk.SerializeToString())


def failure_message(result: Any) -> str:
    """The exception text of a GenericResult (a message, or its encoding)."""
    if isinstance(result, bytes):
        result = api_pb2.GenericResult.FromString(result)
    return str(result.exception)


def parse_chunk(raw: bytes) -> tuple[bytes, str]:
    """A serialized DataChunk's (inline data, blob id): one of them is set."""
    chunk = api_pb2.DataChunk.FromString(raw)
    return bytes(chunk.data), chunk.data_blob_id


def response_message(data: bytes) -> MessageDict | None:
    """The ASGI message an app sent (an api_pb2.Asgi), for the web client; None for one the gateway skips."""
    asgi = api_pb2.Asgi.FromString(data)
    kind = asgi.WhichOneof("type")
    if kind == "http_response_start":
        start = asgi.http_response_start
        return {
            "type": "http.response.start",
            "status": int(start.status),
            "headers": _pairs(start.headers),
            "trailers": bool(start.trailers),
        }
    if kind == "http_response_body":
        body = asgi.http_response_body
        return {"type": "http.response.body", "body": bytes(body.body), "more_body": bool(body.more_body)}
    if kind == "http_response_trailers":
        trailers = asgi.http_response_trailers
        return {
            "type": "http.response.trailers",
            "headers": _pairs(trailers.headers),
            "more_trailers": bool(trailers.more_trailers),
        }
    if kind == "websocket_accept":
        accept = asgi.websocket_accept
        message: MessageDict = {"type": "websocket.accept", "headers": _pairs(accept.headers)}
        if accept.HasField("subprotocol"):
            message["subprotocol"] = accept.subprotocol
        return message
    if kind == "websocket_send":
        send = asgi.websocket_send
        if send.HasField("bytes"):
            return {"type": "websocket.send", "bytes": bytes(send.bytes)}
        return {"type": "websocket.send", "text": send.text}
    if kind == "websocket_close":
        close = asgi.websocket_close
        return {
            "type": "websocket.close",
            "code": int(close.code) if close.HasField("code") else 1000,
            "reason": close.reason,
        }
    return None
