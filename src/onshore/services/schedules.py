"""Schedules: which functions of live apps run by themselves, when each runs next, and when one is due.

A publish (a deploy, a redeploy, `modal serve`'s reload) replaces the app's schedules with those its functions
declare; a period counts from that publish (a redeploy resets it, as Modal's does), a cron keeps its times. A
stopped app's schedules go. A schedule is due once its time has passed; it then runs once, and its next time
is the first one after now: however many times a downtime or a stall let pass, they make one run, not a burst.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from onshore.errors import InvalidArgument
from onshore.models import LIVE_APP_STATES, App, AppState, ScheduleRecord
from onshore.services.clock import Clock
from onshore.services.functions import FunctionService
from onshore.services.schedule_times import next_after, validate
from onshore.store.base import ScheduleStore

log = logging.getLogger("onshore.schedules")


class ScheduleService:
    def __init__(self, store: ScheduleStore, functions: FunctionService, clock: Clock) -> None:
        self._store = store
        self._functions = functions
        self._clock = clock
        self._schedules: dict[str, ScheduleRecord] = {s.function_id: s for s in store.list_schedules()}

    # ---------------------------------------------------------------- queries
    def all(self) -> list[ScheduleRecord]:
        return sorted(self._schedules.values(), key=lambda s: (s.next_at, s.function_id))

    def for_app(self, app_id: str) -> list[ScheduleRecord]:
        return [s for s in self.all() if s.app_id == app_id]

    def find(self, function_id: str) -> ScheduleRecord | None:
        return self._schedules.get(function_id)

    def due(self) -> list[ScheduleRecord]:
        """The schedules whose time has come, soonest first."""
        now = self._clock.now()
        return [s for s in self.all() if s.next_at <= now]

    def next_due(self) -> float | None:
        """When the soonest schedule is due (None without any)."""
        return min((s.next_at for s in self._schedules.values()), default=None)

    # ---------------------------------------------------------------- changes
    def app_published(self, app: App) -> None:
        """The app was published with its functions: their schedules replace the app's earlier ones."""
        if app.state not in LIVE_APP_STATES:
            self.drop_app(app.app_id)
            return
        now = self._clock.now()
        anchor = app.deployed_at if app.state == AppState.DEPLOYED and app.deployed_at else now
        wanted: dict[str, ScheduleRecord] = {}
        for tag, function_id in app.function_ids.items():
            spec = self._functions.spec(function_id)
            if spec is None or spec.schedule is None:
                continue
            try:
                validate(spec.schedule)  # FunctionCreate checked it; a stored definition is checked again
            except InvalidArgument as exc:
                log.warning(
                    "function %s (%s) of app %s is not scheduled: %s", tag, function_id, app.app_id, exc
                )
                continue
            old = self._schedules.get(function_id)
            wanted[function_id] = ScheduleRecord(
                function_id=function_id,
                app_id=app.app_id,
                tag=tag,
                spec=spec.schedule,
                anchor=anchor,
                next_at=next_after(spec.schedule, anchor, now),
                last_fired_at=old.last_fired_at if old else None,
                last_call_id=old.last_call_id if old else "",
            )
        for record in list(self._schedules.values()):
            if record.app_id == app.app_id and record.function_id not in wanted:
                self._delete(record.function_id)
        for record in wanted.values():
            self._store.put_schedule(record)
            self._schedules[record.function_id] = record
        if wanted:
            log.info(
                "app %s schedules: %s",
                app.app_id,
                ", ".join(f"{r.tag} next at {_utc(r.next_at)}" for r in wanted.values()),
            )

    def drop_app(self, app_id: str) -> None:
        """The app stopped: its functions run no more."""
        for record in list(self._schedules.values()):
            if record.app_id == app_id:
                self._delete(record.function_id)

    def restore(self, is_live: Callable[[str], bool]) -> int:
        """After a restart: drop the schedules of apps that did not survive it; how many schedules remain."""
        for record in list(self._schedules.values()):
            if not is_live(record.app_id):
                self._delete(record.function_id)
        return len(self._schedules)

    def advance(self, function_id: str, call_id: str) -> ScheduleRecord | None:
        """A due schedule was run (call_id: its call; "" where starting it failed): it is next due at its
        first time after now, the times it missed are skipped. The updated record (None if it is gone)."""
        current = self._schedules.get(function_id)
        if current is None:
            return None
        now = self._clock.now()
        record = copy.copy(current)
        record.last_fired_at = now
        record.last_call_id = call_id
        record.next_at = next_after(record.spec, record.anchor, now)
        # Kept in memory first: a store that cannot take the write must not make the schedule due again at
        # once (after a restart, a lost write is one missed run, run once).
        self._schedules[function_id] = record
        self._store.put_schedule(record)
        return record

    def _delete(self, function_id: str) -> None:
        self._store.delete_schedule(function_id)
        self._schedules.pop(function_id, None)


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
