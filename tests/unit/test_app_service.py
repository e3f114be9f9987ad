"""The app service on an in-memory store: lifecycles, deployments, replacement, heartbeats, restarts."""

from __future__ import annotations

import asyncio

import pytest

from onshore.errors import Conflict, InvalidArgument, NotFound
from onshore.events import Events
from onshore.models import App, AppState
from onshore.services.apps import AppService
from onshore.services.clock import FakeClock
from onshore.store.memory import memory_store


def _deploy(apps: AppService, app: App, name: str) -> App:
    return apps.publish(
        app.app_id, name=name, state=AppState.DEPLOYED, function_ids={}, class_ids={}, client_version="1.6.4"
    )


async def test_a_deployment_replaces_the_last_one_of_its_name_and_keeps_a_history() -> None:
    clock = FakeClock()
    events = Events()
    apps = AppService(memory_store(), clock, events=events)
    stopped: list[tuple[str, str]] = []

    async def on_stop(app: App, reason: str, failed: bool) -> None:
        stopped.append((app.app_id, reason))

    events.app_stopped.connect(on_stop)
    first = _deploy(apps, apps.create("", AppState.INITIALIZING, "main"), "web")
    assert (first.state, first.version, apps.deployed("web")) == (AppState.DEPLOYED, 1, first)
    again = _deploy(apps, first, "web")  # a redeploy of the same app bumps its version
    assert again.version == 2 and [r.version for r in apps.history(first.app_id)] == [1, 2]

    second = _deploy(apps, apps.create("", AppState.INITIALIZING, "main"), "web")
    await asyncio.sleep(0)  # the replaced app stops in the background
    assert apps.deployed("web") is second
    assert apps.get(first.app_id).state == AppState.STOPPED
    assert stopped == [(first.app_id, f"replaced by deployment {second.app_id}")]
    with pytest.raises(Conflict, match="is stopped and cannot be published"):
        _deploy(apps, first, "web")
    with pytest.raises(InvalidArgument, match="Invalid app name"):
        _deploy(apps, apps.create("", AppState.INITIALIZING, "main"), "no spaces allowed")


async def test_ephemeral_apps_expire_without_heartbeats_and_do_not_outlive_a_restart() -> None:
    clock = FakeClock()
    store = memory_store()
    apps = AppService(store, clock)
    quiet = apps.create("quiet", AppState.EPHEMERAL, "main")
    chatty = apps.create("chatty", AppState.EPHEMERAL, "main")
    detached = apps.create("detached", AppState.DETACHED, "main")
    clock.advance(50)
    apps.heartbeat(chatty.app_id)
    clock.advance(20)
    assert [a.app_id for a in apps.expired(60)] == [quiet.app_id]  # detached apps need no client
    await apps.client_disconnected(chatty.app_id, "client disconnected")
    assert apps.get(chatty.app_id).state == AppState.STOPPED
    with pytest.raises(InvalidArgument, match="cannot be created in state deployed"):
        apps.create("", AppState.DEPLOYED, "main")

    # A new service on the same store (a restart): the ephemeral app is stopped, the detached one runs on.
    restarted = AppService(store, clock)
    assert [a.app_id for a in restarted.stop_orphans_after_restart()] == [quiet.app_id]
    assert restarted.get(detached.app_id).state == AppState.DETACHED
    with pytest.raises(NotFound):
        restarted.get("ap-" + "n" * 22)
