"""Web endpoint labels and routes: names, -dev for apps not deployed, conflicts, redeploys, Host headers."""

from __future__ import annotations

import pytest

from onshore.errors import AlreadyExists, InvalidArgument
from onshore.models import App, AppState
from onshore.services.web import WEBHOOK_ASGI_APP, WEBHOOK_FUNCTION, WebEndpoint, WebService

LIVE: set[str] = set()


def web() -> WebService:
    return WebService("http://127.0.0.1:9000/", "localhost", lambda app_id: app_id in LIVE)


def app(app_id: str, name: str = "", state: AppState = AppState.DEPLOYED, description: str = "") -> App:
    LIVE.add(app_id)
    return App(app_id, description or name, state, 0.0, name=name)


def test_labels_come_from_the_app_and_function_or_the_decorator() -> None:
    service = web()
    deployed = app("ap-1", "My App")
    assert (
        service.label_for(deployed, "hello_world", WebEndpoint("", WEBHOOK_FUNCTION)) == "my-app-hello-world"
    )
    assert service.label_for(deployed, "Svc.*", WebEndpoint("info", WEBHOOK_FUNCTION)) == "my-app-svc-info"
    assert service.label_for(deployed, "f", WebEndpoint("", WEBHOOK_FUNCTION, "mine")) == "mine"
    served = app("ap-2", state=AppState.EPHEMERAL, description="my-app")
    assert service.label_for(served, "f", WebEndpoint("", WEBHOOK_FUNCTION)) == "my-app-f-dev"
    assert service.url("mine") == "http://127.0.0.1:9000/mine"
    long_name = service.label_for(deployed, "f" * 100, WebEndpoint("", WEBHOOK_FUNCTION))
    assert len(long_name) <= 63


def test_bad_and_reserved_labels_are_refused() -> None:
    service = web()
    deployed = app("ap-3", "a")
    for label in ("Has Caps", "-dash", "x" * 64):
        with pytest.raises(InvalidArgument, match="not valid"):
            service.label_for(deployed, "f", WebEndpoint("", WEBHOOK_FUNCTION, label))
    with pytest.raises(InvalidArgument, match="reserved"):
        service.label_for(deployed, "f", WebEndpoint("", WEBHOOK_FUNCTION, "blobs"))


def test_a_label_belongs_to_one_live_app_and_a_redeploy_keeps_it() -> None:
    service = web()
    first, second = app("ap-4", "one"), app("ap-5", "two")
    endpoint = WebEndpoint("", WEBHOOK_ASGI_APP, "shared")
    service.register("fu-1", first.app_id, service.plan(first, "f", [endpoint]))
    assert service.plan(first, "f", [endpoint]) == [(endpoint, "shared")]  # the same app again
    with pytest.raises(AlreadyExists, match="shared"):
        service.plan(second, "g", [endpoint])
    route = service.resolve("shared")
    assert route is not None and route.function_id == "fu-1" and route.kind == WEBHOOK_ASGI_APP
    LIVE.discard(first.app_id)  # the first app stopped: its label is free
    assert service.resolve("shared") is None
    service.register("fu-2", second.app_id, service.plan(second, "g", [endpoint]))
    assert service.resolve("shared") is not None


def test_a_function_renamed_by_a_redeploy_drops_its_old_label() -> None:
    service = web()
    deployed = app("ap-6", "x")
    service.register("fu-3", deployed.app_id, [(WebEndpoint("", WEBHOOK_FUNCTION, "old"), "old")])
    service.register("fu-3", deployed.app_id, [(WebEndpoint("", WEBHOOK_FUNCTION, "new"), "new")])
    assert service.resolve("old") is None and service.resolve("new") is not None


def test_a_stopped_apps_routes_are_dropped() -> None:
    service = web()
    deployed = app("ap-7", "y")
    service.register("fu-4", deployed.app_id, [(WebEndpoint("", WEBHOOK_FUNCTION, "gone"), "gone")])
    service.drop_app(deployed.app_id)
    assert service.resolve("gone") is None and service.routes_of_app(deployed.app_id) == []


def test_host_headers_name_labels_under_the_domain() -> None:
    service = web()
    assert service.label_of_host("my-app-f.localhost:9000") == "my-app-f"
    assert service.label_of_host("my-app-f.localhost") == "my-app-f"
    assert service.label_of_host("127.0.0.1:9000") == ""
    assert service.label_of_host("a.b.localhost") == ""
    assert WebService("http://h", "", lambda _: True).label_of_host("x.localhost") == ""
