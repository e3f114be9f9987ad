"""The schedule service and the scheduler loop on an in-memory store and a fake clock: due or not, one run for
a missed window, restarts, redeploys, stops, a time zone across DST, failures that do not stop the loop."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from modal_proto import api_pb2

from onshore.cli.status import Listing, render
from onshore.errors import Conflict, InvalidArgument
from onshore.loops.scheduler import Scheduler
from onshore.models import App, AppState, FunctionRecord, FunctionSpec, ScheduleSpec
from onshore.protocol.functions import function_summary, spec_from_definition
from onshore.protocol.schedules import ScheduledRunner, empty_input
from onshore.services.apps import AppService
from onshore.services.call_state import INVOCATION_ASYNC
from onshore.services.calls import CallService
from onshore.services.clock import FakeClock
from onshore.services.functions import FunctionService
from onshore.services.invoke import InvokeService
from onshore.services.schedules import ScheduleService
from onshore.store.memory import memory_store
from onshore.store.sqlite import SqliteStore, read_schedules

START = datetime(2024, 3, 9, 12, 0, tzinfo=UTC).timestamp()


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


class Harness:
    """The services a server builds for schedules, over one store; `restart()` builds them anew over it."""

    def __init__(self, store: SqliteStore | None = None, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock(START)
        self.store = store or memory_store()
        self.apps = AppService(self.store, self.clock)
        self.functions = FunctionService(self.store, self.apps, self.clock)
        self.calls = CallService(self.store, self.functions.spec, lambda s, m: m.encode(), self.clock, 0.2)
        self.invoke = InvokeService(self.apps, self.functions, self.calls)
        self.schedules = ScheduleService(self.store, self.functions, self.clock)
        self.started: list[str] = []
        runner = ScheduledRunner(self.functions, self.invoke)

        def start(function_id: str) -> str:
            self.started.append(function_id)
            return runner.start(function_id)

        self.scheduler = Scheduler(self.schedules, start, self.clock)

    def restart(self) -> Harness:
        """A new server process over the same database, as `_restore` brings it up."""
        new = Harness(self.store, self.clock)
        new.apps.stop_orphans_after_restart()
        new.functions.load_live()
        new.schedules.restore(new.apps.is_live)
        return new

    def define(self, app: App, tag: str, schedule: ScheduleSpec | None) -> FunctionRecord:
        existing = app.function_ids.get(tag, "")
        return self.functions.create(
            app.app_id, existing, b"definition", FunctionSpec(tag=tag, schedule=schedule), []
        )

    def deploy(self, name: str, schedules: dict[str, ScheduleSpec | None], app: App | None = None) -> App:
        """`modal deploy`: define the functions, then publish the app (a redeploy passes the app)."""
        app = app or self.apps.create("", AppState.INITIALIZING, "main")
        function_ids = {tag: self.define(app, tag, spec).function_id for tag, spec in schedules.items()}
        app = self.apps.publish(
            app.app_id,
            name=name,
            state=AppState.DEPLOYED,
            function_ids=function_ids,
            class_ids={},
            client_version="1.6.4",
        )
        self.schedules.app_published(app)
        return app

    async def tick(self, seconds: float = 0.0) -> list[str]:
        """Let `seconds` pass, run one scheduler tick; the functions it started."""
        self.clock.advance(seconds)
        self.started.clear()
        await self.scheduler.run_once()
        return list(self.started)


async def test_a_period_runs_when_due_as_a_spawned_call_with_no_arguments() -> None:
    h = Harness()
    app = h.deploy("periodic", {"tick": ScheduleSpec(seconds=10), "plain": None})
    (record,) = h.schedules.all()
    fn = app.function_ids["tick"]
    assert (record.function_id, record.tag, record.next_at) == (fn, "tick", START + 10)
    assert await h.tick(9.5) == []
    assert h.scheduler.interval == pytest.approx(0.5)  # it sleeps until the schedule is due
    assert await h.tick(0.5) == [fn]
    after = h.schedules.find(fn)
    assert after is not None and after.next_at == START + 20 and after.last_fired_at == START + 10
    call = h.calls.get_call(after.last_call_id)
    assert (call.function_id, call.invocation_type, call.persistent) == (fn, INVOCATION_ASYNC, True)
    (stored,) = h.store.inputs_for_call(call.function_call_id)
    assert stored.payload == empty_input()
    assert h.calls.demand(fn) == (1, 0)  # queued for the autoscaler to start a container for
    assert await h.tick(5) == []
    assert await h.tick(5) == [fn]
    assert h.scheduler.interval == 1.0  # never sleeps past a second


async def test_a_missed_window_runs_once_not_once_per_missed_time() -> None:
    h = Harness()
    app = h.deploy("periodic", {"tick": ScheduleSpec(seconds=10)})
    fn = app.function_ids["tick"]
    assert await h.tick(3600 + 3) == [fn]  # 360 runs were missed: one runs
    record = h.schedules.find(fn)
    assert record is not None and record.next_at == START + 3610  # the next time after now, on the period
    assert await h.tick(1) == []
    assert await h.tick(6) == [fn]


async def test_a_schedule_survives_a_restart_and_runs_once_for_the_downtime(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "onshore.db")
    h = Harness(store)
    app = h.deploy("daily", {"report": ScheduleSpec(kind="cron", cron="0 6 * * *", timezone="Europe/Paris")})
    fn = app.function_ids["report"]
    before = h.schedules.find(fn)
    assert before is not None and _utc(before.next_at) == "2024-03-10 05:00:00"  # 6:00 in Paris (CET)
    # The server is down for three days: three runs missed.
    h.clock.advance(3 * 86400)
    again = h.restart()
    restored = again.schedules.find(fn)
    assert restored is not None and restored.next_at == before.next_at
    assert await again.tick() == [fn]
    assert await again.tick(1) == []
    record = again.schedules.find(fn)
    assert record is not None and _utc(record.next_at) == "2024-03-13 05:00:00"
    # What ran is in the database: one more restart does not run it again.
    third = again.restart()
    assert await third.tick() == []
    assert [s.function_id for s in read_schedules(tmp_path / "onshore.db")] == [fn]
    store.close()


async def test_an_ephemeral_apps_schedule_runs_while_it_runs_and_not_after_a_restart() -> None:
    h = Harness()
    app = h.apps.create("modal run", AppState.EPHEMERAL, "main")
    fn = h.define(app, "tick", ScheduleSpec(seconds=5))
    app = h.apps.publish(
        app.app_id,
        name="",
        state=AppState.EPHEMERAL,
        function_ids={"tick": fn.function_id},
        class_ids={},
        client_version="1.6.4",
    )
    h.schedules.app_published(app)
    assert await h.tick(5) == [fn.function_id]
    again = h.restart()  # ephemeral apps do not outlive a restart, nor their schedules
    assert again.schedules.all() == [] and await again.tick(60) == []


async def test_a_redeploy_replaces_the_schedules_and_resets_a_period() -> None:
    h = Harness()
    app = h.deploy("jobs", {"a": ScheduleSpec(seconds=10), "b": ScheduleSpec(minutes=1), "c": None})
    ids = dict(app.function_ids)
    h.clock.advance(7)
    # a: a new period, counted from this deployment; b: no schedule any more; c: now scheduled.
    app = h.deploy("jobs", {"a": ScheduleSpec(seconds=30), "b": None, "c": ScheduleSpec(hours=1)}, app)
    assert app.function_ids == ids  # a redeploy keeps the functions' ids
    by_tag = {s.tag: s for s in h.schedules.all()}
    assert set(by_tag) == {"a", "c"}
    assert by_tag["a"].spec.seconds == 30 and by_tag["a"].next_at == START + 7 + 30
    assert by_tag["c"].next_at == START + 7 + 3600
    assert await h.tick(10) == []  # the old 10 s period is gone
    assert await h.tick(20) == [ids["a"]]
    # A function the next deployment no longer has loses its schedule.
    h.deploy("jobs", {"c": ScheduleSpec(hours=1)}, app)
    assert [s.tag for s in h.schedules.all()] == ["c"]


async def test_a_stopped_app_runs_no_more() -> None:
    h = Harness()
    app = h.deploy("periodic", {"tick": ScheduleSpec(seconds=10)})
    other = h.deploy("other", {"tock": ScheduleSpec(seconds=10)})
    await h.apps.stop(app.app_id, "modal app stop")
    h.schedules.drop_app(app.app_id)  # the server does this on every app stop
    assert [s.app_id for s in h.schedules.all()] == [other.app_id]
    assert await h.tick(10) == [other.function_ids["tock"]]
    assert [s.app_id for s in h.restart().schedules.all()] == [other.app_id]
    # A publish that names a stopped app's state drops what it had, too.
    h.schedules.app_published(h.apps.get(other.app_id))
    assert len(h.schedules.all()) == 1
    await h.apps.stop(other.app_id, "done")
    h.schedules.app_published(h.apps.get(other.app_id))
    assert h.schedules.all() == []


async def test_a_cron_in_a_time_zone_follows_its_clocks_across_dst() -> None:
    h = Harness()  # Saturday 2024-03-09 12:00 UTC; New York springs forward on Sunday at 2:00
    app = h.deploy("ny", {"wake": ScheduleSpec(kind="cron", cron="0 6 * * *", timezone="America/New_York")})
    fn = app.function_ids["wake"]
    record = h.schedules.find(fn)
    assert record is not None and _utc(record.next_at) == "2024-03-10 10:00:00"  # 6:00 EDT, no more EST
    assert await h.tick(record.next_at - 1 - h.clock.now()) == []
    assert await h.tick(1) == [fn]
    record = h.schedules.find(fn)
    assert record is not None and _utc(record.next_at) == "2024-03-11 10:00:00"


async def test_a_run_that_cannot_start_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    app = h.deploy("jobs", {"bad": ScheduleSpec(seconds=10), "good": ScheduleSpec(seconds=10)})
    ids = app.function_ids

    def start(function_id: str) -> str:
        if function_id == ids["bad"]:
            raise RuntimeError("the runtime is gone")
        h.started.append(function_id)
        return "fc-good"

    scheduler = Scheduler(h.schedules, start, h.clock)
    h.clock.advance(10)
    with caplog.at_level(logging.INFO, "onshore.scheduler"):
        await scheduler.run_once()
    assert h.started == [ids["good"]]
    assert "scheduled run of bad" in caplog.text and "the runtime is gone" in caplog.text
    bad = h.schedules.find(ids["bad"])
    assert bad is not None and bad.next_at == START + 20 and bad.last_call_id == ""  # not retried each tick
    # A function whose app is no longer live is not run (the runner says why).
    runner = ScheduledRunner(h.functions, h.invoke)
    await h.apps.stop(app.app_id, "stopped")
    with pytest.raises(Conflict, match="its app is stopped"):
        runner.start(ids["good"])


def test_a_bad_schedule_is_refused_when_the_function_is_defined() -> None:
    h = Harness()
    app = h.apps.create("", AppState.INITIALIZING, "main")
    for spec, message in [
        (ScheduleSpec(kind="cron", cron="* * * *"), "five fields"),
        (ScheduleSpec(kind="cron", cron="* * * * *", timezone="Nowhere/City"), "Unknown timezone"),
        (ScheduleSpec(), "every unit is zero"),
    ]:
        with pytest.raises(InvalidArgument, match=f"Function 'job' has a bad schedule: .*{message}"):
            h.define(app, "job", spec)
    assert h.functions.list_for_app(app.app_id) == []


def test_status_shows_each_schedules_next_run() -> None:
    class Row:
        def __init__(self, app_id: str, name: str) -> None:
            self.app_id, self.name, self.description = app_id, name, name
            self.state, self.created_at, self.n_running_tasks = 4, 1.0, 0

    h = Harness()
    app = h.deploy("periodic", {"tick": ScheduleSpec(seconds=90)})
    lines = render(Listing([Row(app.app_id, "periodic")], [], h.schedules.all()), False, now=START + 30)
    at = lines.index("Schedules:")
    assert lines[at + 1].split() == ["APP", "FUNCTION", "SCHEDULE", "NEXT", "RUN"]
    assert "periodic  tick      Every 90 seconds" in lines[at + 2] and lines[at + 2].endswith("(in 60s)")
    assert "Schedules:" not in render(Listing([], [], []), False)


def test_a_definitions_schedule_reaches_the_spec_and_app_info() -> None:
    fn = api_pb2.Function(function_name="job")
    fn.schedule.cron.cron_string = "0 9 * * 1-5"
    fn.schedule.cron.timezone = "Europe/Paris"
    assert spec_from_definition(fn).schedule == ScheduleSpec(
        kind="cron", cron="0 9 * * 1-5", timezone="Europe/Paris"
    )
    summary = function_summary(fn.SerializeToString())
    assert summary.schedule == fn.schedule and not summary.web_function
    assert not summary.HasField("requires_proxy_auth")  # only web functions say whether they need auth
    period = api_pb2.Function(function_name="tick")
    period.schedule.period.minutes = 15
    assert spec_from_definition(period).schedule == ScheduleSpec(minutes=15)
    assert spec_from_definition(api_pb2.Function(function_name="plain")).schedule is None
    web = api_pb2.Function(function_name="hook")
    web.webhook_config.type = api_pb2.WEBHOOK_TYPE_FUNCTION
    summary = function_summary(web.SerializeToString())
    assert summary.web_function and summary.HasField("requires_proxy_auth")
    assert not summary.requires_proxy_auth and not summary.HasField("schedule")
