"""Web endpoints: which URL label belongs to which function (or class method), and the URLs handed out.

Each endpoint gets a label: the one its decorator asks for (`label=`), else `<app>-<function>` (a class's
method: `<app>-<class>-<method>`), with `-dev` for an app that is not deployed (`modal serve`, `modal run`).
A label belongs to one live app at a time; a redeploy of the same app keeps it. The gateway serves a label at
`http://HOST:PORT/<label>/...` and at `<label>.<domain>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from onshore.errors import AlreadyExists, InvalidArgument
from onshore.models import App, AppState

MAX_LABEL = 63
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
# First path segments the HTTP port serves itself: no label may take them.
RESERVED_LABELS = frozenset(
    {"blobs", "healthz", "apps", "login", "logout", "static", "api", "_onshore"}
    | {"volume-blocks", "volume-objects"}
)

# WebhookType numbers (kept here so services stay free of protobuf).
WEBHOOK_FUNCTION = 1
WEBHOOK_ASGI_APP = 2
WEBHOOK_WSGI_APP = 3
WEBHOOK_WEB_SERVER = 4


@dataclass(frozen=True)
class WebEndpoint:
    """A web endpoint as a definition declares it."""

    method_name: str  # "" for a function; the method's name on a class
    kind: int  # a WEBHOOK_* number
    requested_label: str = ""
    requires_proxy_auth: bool = False


@dataclass(frozen=True)
class WebRoute:
    """Where the gateway sends the requests of one label."""

    label: str
    function_id: str
    app_id: str
    method_name: str
    kind: int
    requires_proxy_auth: bool


def label_of_url(url: str) -> str:
    """The label a web URL ends with."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def slug(text: str) -> str:
    """Lower-case letters, digits and single dashes."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


class WebService:
    def __init__(self, base_url: str, domain: str, app_live: Callable[[str], bool]) -> None:
        self._base_url = base_url.rstrip("/")
        self.domain = domain
        self._app_live = app_live
        self._routes: dict[str, WebRoute] = {}
        self._by_function: dict[str, list[str]] = {}

    def url(self, label: str) -> str:
        return f"{self._base_url}/{label}"

    def current_url(self, stored: str) -> str:
        """A URL handed out earlier, on this server's address now (a restart may have moved its port)."""
        return self.url(label_of_url(stored)) if stored else ""

    def label_for(self, app: App, tag: str, endpoint: WebEndpoint) -> str:
        if endpoint.requested_label:
            label = endpoint.requested_label
            if not _LABEL_RE.match(label) or len(label) > MAX_LABEL:
                raise InvalidArgument(
                    f"Web endpoint label {label!r} is not valid: use lower-case letters, digits and dashes "
                    f"(not at either end), at most {MAX_LABEL} characters"
                )
        else:
            parts = [app.name or app.description or "app", tag, endpoint.method_name]
            label = slug("-".join(p for p in parts if p))
            if len(label) > MAX_LABEL - 4:
                label = label[: MAX_LABEL - 4].rstrip("-")
        if app.state in (AppState.EPHEMERAL, AppState.DETACHED):  # `modal serve` or `modal run`
            label = f"{label}-dev"[:MAX_LABEL]
        if label in RESERVED_LABELS:
            raise InvalidArgument(f"Web endpoint label {label!r} is reserved by the server; choose another")
        return label

    def plan(self, app: App, tag: str, endpoints: list[WebEndpoint]) -> list[tuple[WebEndpoint, str]]:
        """The label of each endpoint; AlreadyExists if another live app holds one of them."""
        planned = []
        seen: set[str] = set()
        for endpoint in endpoints:
            label = self.label_for(app, tag, endpoint)
            held = self._routes.get(label)
            if label in seen or (
                held is not None and held.app_id != app.app_id and self._app_live(held.app_id)
            ):
                raise AlreadyExists(
                    f"The web endpoint label {label!r} is already in use by another app; "
                    "give this endpoint another label (label=...)"
                )
            seen.add(label)
            planned.append((endpoint, label))
        return planned

    def register(self, function_id: str, app_id: str, planned: list[tuple[WebEndpoint, str]]) -> None:
        """Route the planned labels to the function (replacing what it had: a redeploy may rename)."""
        for label in self._by_function.pop(function_id, []):
            route = self._routes.get(label)
            if route is not None and route.function_id == function_id:
                del self._routes[label]
        labels = []
        for endpoint, label in planned:
            self._routes[label] = WebRoute(
                label,
                function_id,
                app_id,
                endpoint.method_name,
                endpoint.kind,
                endpoint.requires_proxy_auth,
            )
            labels.append(label)
        if labels:
            self._by_function[function_id] = labels

    def drop_app(self, app_id: str) -> None:
        """Forget the routes of an app that stopped (its labels are free again)."""
        for label, route in list(self._routes.items()):
            if route.app_id == app_id:
                del self._routes[label]
                self._by_function.pop(route.function_id, None)

    def resolve(self, label: str) -> WebRoute | None:
        """The live route of a label, or None."""
        route = self._routes.get(label)
        if route is None or not self._app_live(route.app_id):
            return None
        return route

    def routes_of_app(self, app_id: str) -> list[WebRoute]:
        return [r for r in self._routes.values() if r.app_id == app_id]

    def label_of_host(self, host: str) -> str:
        """The label a Host header names (`<label>.<domain>[:port]`), or ""."""
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        suffix = f".{self.domain}"
        if self.domain and name.endswith(suffix):
            label = name[: -len(suffix)]
            if _LABEL_RE.match(label):
                return label
        return ""
