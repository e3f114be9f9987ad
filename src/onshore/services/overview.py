"""What the app pages show: apps, and for one app its functions, containers, recent inputs and logs.

A read model over the other services; it never holds secret values (a function's secrets are not shown).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from onshore.models import App, AppState
from onshore.scheduling.placement import request_of
from onshore.services.apps import AppService
from onshore.services.call_state import (
    STATUS_FAILURE,
    STATUS_INIT_FAILURE,
    STATUS_INTERNAL_FAILURE,
    STATUS_SUCCESS,
    STATUS_TERMINATED,
    STATUS_TIMEOUT,
)
from onshore.services.calls import CallService
from onshore.services.containers import ContainerService, TaskState
from onshore.services.functions import FunctionService
from onshore.services.logs import LogEntry, LogService
from onshore.services.schedule_times import describe
from onshore.services.schedules import ScheduleService
from onshore.services.tasks import TaskDirectory
from onshore.services.web import WebService

STATUS_NAMES = {
    STATUS_SUCCESS: "success",
    STATUS_FAILURE: "failure",
    STATUS_TERMINATED: "terminated",
    STATUS_TIMEOUT: "timeout",
    STATUS_INIT_FAILURE: "init failure",
    STATUS_INTERNAL_FAILURE: "internal failure",
}


@dataclass
class AppRow:
    app: App
    functions: int
    live_containers: int


@dataclass
class FunctionRow:
    function_id: str
    name: str
    web_urls: list[tuple[str, str]]  # (method name or "", URL)
    settings: dict[str, str]
    live_containers: int


@dataclass
class ContainerRow:
    task_id: str
    function: str
    state: str
    started_at: float
    finished_at: float = 0.0
    exit_code: int | None = None


@dataclass
class InputRow:
    function: str
    input_id: str
    function_call_id: str
    status: str
    queued_at: float
    duration_s: float | None  # from the container's start on it to its end; None if it never started


@dataclass
class AppOverview:
    app: App
    functions: list[FunctionRow] = field(default_factory=list)
    containers: list[ContainerRow] = field(default_factory=list)
    inputs: list[InputRow] = field(default_factory=list)


class OverviewService:
    def __init__(
        self,
        apps: AppService,
        functions: FunctionService,
        web: WebService,
        containers: ContainerService,
        tasks: TaskDirectory,
        calls: CallService,
        logs: LogService,
        schedules: ScheduleService | None = None,
    ) -> None:
        self._apps = apps
        self._functions = functions
        self._web = web
        self._containers = containers
        self._tasks = tasks
        self._calls = calls
        self._logs = logs
        self._schedules = schedules

    def app_rows(self) -> list[AppRow]:
        """Every app, live ones first, newest first within each."""
        apps = sorted(self._apps.all_apps(), key=lambda a: (a.state == AppState.STOPPED, -a.created_at))
        return [AppRow(a, len(a.function_ids), len(self._tasks.live(a.app_id))) for a in apps]

    def app(self, app_id: str) -> AppOverview:
        """NotFound for an unknown app."""
        app = self._apps.get(app_id)
        names: dict[str, str] = {}
        overview = AppOverview(app)
        routes = self._web.routes_of_app(app_id)
        live = self._tasks.live(app_id)
        for record in self._functions.list_for_app(app_id):
            if record.parent_function_id:
                continue
            spec = record.spec
            names[record.function_id] = spec.tag
            urls = [
                (r.method_name, self._web.url(r.label)) for r in routes if r.function_id == record.function_id
            ]
            settings = {
                "timeout": f"{spec.timeout_secs}s",
                "containers": f"min {spec.min_containers}, max {spec.max_containers or 'no limit'}",
                "buffer containers": str(spec.buffer_containers),
                "scaledown window": f"{spec.scaledown_window:g}s",
                "inputs per container at once": str(spec.max_concurrent_inputs),
                "retries": str(spec.retry.max_retries),
                "secrets": str(len(spec.secret_ids)),
                "resources": request_of(spec).describe(),
            }
            settings.update(self._schedule_settings(record.function_id))
            overview.functions.append(
                FunctionRow(
                    record.function_id,
                    spec.tag,
                    sorted(urls),
                    settings,
                    sum(1 for t in live if t.function_id == record.function_id),
                )
            )
        for task in sorted(live, key=lambda t: -t.started_at):
            overview.containers.append(
                ContainerRow(
                    task.task_id,
                    names.get(task.function_id, task.function_id),
                    task.state.value,
                    task.started_at,
                )
            )
        for ended in self._tasks.ended(app_id):
            overview.containers.append(
                ContainerRow(
                    ended.task_id,
                    names.get(ended.function_id, ended.function_id),
                    TaskState.STOPPED.value,
                    ended.started_at,
                    ended.finished_at,
                    ended.exit_code,
                )
            )
        for done in self._calls.recent_inputs(app_id):
            overview.inputs.append(
                InputRow(
                    names.get(done.function_id, done.function_id),
                    done.input_id,
                    done.function_call_id,
                    STATUS_NAMES.get(done.status, str(done.status)),
                    done.queued_at,
                    done.finished_at - done.started_at if done.started_at else None,
                )
            )
        return overview

    def resources(self) -> list[dict[str, Any]]:
        """Each node: what it has, what its containers hold, and which container holds each GPU."""
        holders = {
            (t.allocation.node, g.index): t
            for t in self._containers.tasks.values()
            if t.allocation is not None
            for g in t.allocation.gpus
        }
        out = []
        for index, usage in enumerate(self._containers.ledger.nodes):
            res = usage.resources
            gpus = []
            for g in res.gpus:
                holder = holders.get((index, g.index))
                gpus.append(
                    {
                        "index": g.index,
                        "model": g.model,
                        "memory_mb": g.memory_mb,
                        "emulated": g.emulated,
                        "task_id": holder.task_id if holder else "",
                        "function": self._tag(holder.function_id) if holder else "",
                    }
                )
            out.append(
                {
                    "cpus": res.cpus,
                    "memory_mb": res.memory_mb,
                    "cpus_reserved": round(usage.cpu, 3),
                    "memory_mb_reserved": usage.memory_mb,
                    "gpus": gpus,
                    "gpu_note": res.gpu_note,
                }
            )
        return out

    def _tag(self, function_id: str) -> str:
        spec = self._functions.spec(function_id)
        return spec.tag if spec is not None else function_id

    def _schedule_settings(self, function_id: str) -> dict[str, str]:
        """A scheduled function's schedule, its next run and its last one (nothing for other functions)."""
        record = self._schedules.find(function_id) if self._schedules is not None else None
        if record is None:
            return {}
        out = {"schedule": describe(record.spec), "next run": _local(record.next_at)}
        if record.last_fired_at is not None:
            out["last run"] = _local(record.last_fired_at) + (
                f" ({record.last_call_id})" if record.last_call_id else " (not started)"
            )
        return out

    def logs(self, app_id: str, limit: int = 500) -> list[LogEntry]:
        self._apps.get(app_id)
        return self._logs.fetch(app_id, 0.0, float("inf"), limit)

    def follow_logs(
        self, app_id: str, last_entry_id: int, timeout: float
    ) -> AsyncIterator[list[LogEntry] | None]:
        return self._logs.follow(app_id, last_entry_id, timeout)


def _local(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))
