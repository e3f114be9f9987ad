"""Apps: ephemeral runs and deployments, their lifecycle, layout and deployment history."""

from __future__ import annotations

import copy
import logging
import re

from onshore import ids
from onshore.background import Background
from onshore.errors import Conflict, InvalidArgument, NotFound, quoted
from onshore.events import Events
from onshore.models import LIVE_APP_STATES, App, AppState, DeploymentRecord
from onshore.services.clock import Clock
from onshore.store.base import AppStore

log = logging.getLogger("onshore.apps")

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$")


class AppService:
    def __init__(
        self,
        store: AppStore,
        clock: Clock,
        background: Background | None = None,
        events: Events | None = None,
    ) -> None:
        self._store = store
        self._background = background or Background("apps")
        self._clock = clock
        self._apps: dict[str, App] = {app.app_id: app for app in store.list_apps()}
        self._events = events or Events()  # app_stopped: its calls, containers and log streams end

    # ---------------------------------------------------------------- queries
    def get(self, app_id: str) -> App:
        app = self._apps.get(app_id)
        if app is None:
            raise NotFound(f"App {app_id} not found")
        return app

    def find(self, app_id: str) -> App | None:
        return self._apps.get(app_id)

    def is_live(self, app_id: str) -> bool:
        app = self._apps.get(app_id)
        return app is not None and app.state in LIVE_APP_STATES

    def deployed(self, name: str, environment: str = "main") -> App | None:
        for app in self._apps.values():
            if app.name == name and app.environment == environment and app.state == AppState.DEPLOYED:
                return app
        return None

    def all_apps(self, environment: str | None = None) -> list[App]:
        apps = sorted(self._apps.values(), key=lambda a: a.created_at)
        return [a for a in apps if environment is None or a.environment == environment]

    def history(self, app_id: str) -> list[DeploymentRecord]:
        self.get(app_id)
        return self._store.list_deployments(app_id)

    # ---------------------------------------------------------------- lifecycle
    def create(self, description: str, state: AppState, environment: str, client_version: str = "") -> App:
        if state not in (AppState.EPHEMERAL, AppState.DETACHED, AppState.INITIALIZING):
            raise InvalidArgument(f"An app cannot be created in state {state.value}")
        now = self._clock.now()
        app = App(
            app_id=ids.new_id("app"),
            description=description,
            state=state,
            created_at=now,
            environment=environment or "main",
            client_version=client_version,
            last_heartbeat=self._clock.monotonic(),
        )
        self._save(app)
        return app

    def heartbeat(self, app_id: str) -> None:
        app = self.get(app_id)
        app.last_heartbeat = self._clock.monotonic()

    def publish(
        self,
        app_id: str,
        *,
        name: str,
        state: AppState,
        function_ids: dict[str, str],
        class_ids: dict[str, str],
        client_version: str,
    ) -> App:
        app = self.get(app_id)
        if app.state == AppState.STOPPED:
            raise Conflict(f"App {app_id} is stopped and cannot be published")
        before, replaced = copy.copy(app), None
        app.function_ids = dict(function_ids)
        app.class_ids = dict(class_ids)
        if state == AppState.DEPLOYED:
            if not name or not _NAME_RE.match(name):
                raise InvalidArgument(
                    f"Invalid app name {quoted(name)}: use letters, digits, '.', '-' and '_'"
                )
            other = self.deployed(name, app.environment)
            if other is not None and other.app_id != app_id:
                replaced = other  # another app holds the name: the newer deployment replaces it
            app.name = name
            app.state = AppState.DEPLOYED
            app.version += 1
            app.deployed_at = self._clock.now()
            try:
                self._store.add_deployment(
                    DeploymentRecord(
                        app_id, app.version, app.deployed_at, client_version or app.client_version
                    )
                )
            except Exception:
                vars(app).update(vars(before))
                raise
        elif state in (AppState.EPHEMERAL, AppState.DETACHED):
            if app.state == AppState.INITIALIZING:
                app.state = state
        self._save(app, before)
        if replaced is not None:
            self._stop_now(replaced, f"replaced by deployment {app_id}")
        return app

    async def stop(self, app_id: str, reason: str, failed: bool = False) -> App:
        """Stop the app; `failed`: its client gave up on an error (what it was building is abandoned)."""
        app = self.get(app_id)
        if app.state == AppState.STOPPED:
            return app
        before = copy.copy(app)
        app.state = AppState.STOPPED
        app.stopped_at = self._clock.now()
        self._save(app, before)
        log.info("app %s (%s) stopped: %s", app_id, app.name or app.description, reason)
        await self._events.app_stopped.emit(app, reason, failed)
        return app

    def _stop_now(self, app: App, reason: str) -> None:
        self._background.spawn(self.stop(app.app_id, reason), f"stop app {app.app_id}")

    async def client_disconnected(self, app_id: str, reason: str, failed: bool = False) -> None:
        app = self.get(app_id)
        if app.state in (AppState.EPHEMERAL, AppState.INITIALIZING):
            await self.stop(app_id, reason, failed)

    def expired(self, timeout: float) -> list[App]:
        """Ephemeral apps whose client stopped heartbeating."""
        now = self._clock.monotonic()
        return [
            a
            for a in self._apps.values()
            if a.state in (AppState.EPHEMERAL, AppState.INITIALIZING) and now - a.last_heartbeat > timeout
        ]

    def _save(self, app: App, before: App | None = None) -> None:
        """Store the app, then publish it; where the write fails, the app is left as `before` (a copy)."""
        try:
            self._store.put_app(app)
        except Exception:
            if before is not None:
                vars(app).update(vars(before))
            raise
        self._apps[app.app_id] = app

    def stop_orphans_after_restart(self) -> list[App]:
        """Ephemeral apps cannot outlive a server restart: their clients' connections are gone."""
        stopped = []
        for app in self._apps.values():
            if app.state in (AppState.EPHEMERAL, AppState.INITIALIZING):
                app.state = AppState.STOPPED
                app.stopped_at = self._clock.now()
                self._store.put_app(app)
                stopped.append(app)
        return stopped
