"""gRPC handlers for logs: follow an app's or a container's logs, fetch a time range, count per bucket."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from modal_proto import api_pb2

from onshore.api.base import Principal
from onshore.errors import InvalidArgument, Unimplemented, quoted
from onshore.runtimes.base import FD_STDERR, FD_STDOUT
from onshore.services.apps import AppService
from onshore.services.logs import LogEntry, LogService
from onshore.services.tasks import TaskDirectory

MAX_FOLLOW_SECONDS = 55.0
MAX_BUCKETS = 100_000


def log_batches(entries: list[LogEntry]) -> list[Any]:
    """Group consecutive entries of one container into TaskLogsBatch messages."""
    batches: list[Any] = []
    for entry in entries:
        if not batches or batches[-1].task_id != entry.task_id:
            batches.append(api_pb2.TaskLogsBatch(task_id=entry.task_id, function_id=entry.function_id))
        batch = batches[-1]
        batch.items.add(data=entry.data, timestamp=entry.timestamp, file_descriptor=entry.fd)
        batch.entry_id = str(entry.entry_id)
    return batches


def _refuse_sandbox(req: Any) -> None:
    if req.sandbox_id:
        raise Unimplemented("Sandbox logs: sandboxes (modal.Sandbox) are not supported yet")


def _seconds(ts: Timestamp) -> float:
    return float(ts.ToNanoseconds()) / 1e9


class LogHandlers:
    def __init__(self, apps: AppService, logs: LogService, tasks: TaskDirectory) -> None:
        self._apps = apps
        self._logs = logs
        self._tasks = tasks

    def _app_of(self, req: Any, who: Principal) -> str:
        """The app whose log a request reads: its app_id, else the app of its container (task_id)."""
        _refuse_sandbox(req)
        app_id = str(req.app_id)
        if not app_id and req.task_id:
            app_id = self._tasks.find(req.task_id).app_id
        who.require_app(app_id)
        self._apps.get(app_id)
        return app_id

    async def AppGetLogs(
        self, req: api_pb2.AppGetLogsRequest, who: Principal
    ) -> AsyncIterator[api_pb2.TaskLogsBatch]:
        app_id = self._app_of(req, who)
        try:
            last = int(req.last_entry_id.split("-")[0]) if req.last_entry_id else 0
        except ValueError:
            raise InvalidArgument(f"Bad last_entry_id {quoted(req.last_entry_id)}") from None
        timeout = min(max(req.timeout, 0.0), MAX_FOLLOW_SECONDS) or MAX_FOLLOW_SECONDS
        fd = int(req.file_descriptor)
        if req.task_id and not req.app_id:
            # One container's logs (`modal container logs -f`): they are done when the container has ended.
            stream = self._tasks.follow_logs(req.task_id, last, timeout, fd=fd)
        else:
            stream = self._logs.follow(
                app_id, last, timeout, task_id=req.task_id, function_id=req.function_id
            )
        async for entries in stream:
            if entries is None:
                yield api_pb2.TaskLogsBatch(app_done=True, entry_id=str(last))
                return
            last = max(last, entries[-1].entry_id)
            for batch in log_batches([e for e in entries if not fd or e.fd == fd]):
                yield batch

    def _matching(self, req: Any, app_id: str) -> list[LogEntry]:
        since = _seconds(req.since) if req.HasField("since") else 0.0
        until = _seconds(req.until) if req.HasField("until") else math.inf
        return self._logs.fetch(
            app_id,
            since,
            until,
            int(getattr(req, "limit", 0)),
            task_id=req.task_id,
            function_id=req.function_id,
            fd=int(req.source),
            search=req.search_text,
        )

    async def AppFetchLogs(
        self, req: api_pb2.AppFetchLogsRequest, who: Principal
    ) -> api_pb2.AppFetchLogsResponse:
        app_id = self._app_of(req, who)
        return api_pb2.AppFetchLogsResponse(batches=log_batches(self._matching(req, app_id)))

    async def AppCountLogs(
        self, req: api_pb2.AppCountLogsRequest, who: Principal
    ) -> api_pb2.AppCountLogsResponse:
        """How many entries match, per time bucket of bucket_secs (only buckets that have some)."""
        app_id = self._app_of(req, who)
        bucket_secs = int(req.bucket_secs)
        if bucket_secs <= 0:
            raise InvalidArgument(f"AppCountLogs: bucket_secs must be positive, not {bucket_secs}")
        counts: dict[int, list[int]] = {}
        for entry in self._matching(req, app_id):
            start = int(entry.timestamp // bucket_secs) * bucket_secs
            row = counts.setdefault(start, [0, 0, 0])
            row[0 if entry.fd == FD_STDOUT else 1 if entry.fd == FD_STDERR else 2] += 1
            if len(counts) > MAX_BUCKETS:
                raise InvalidArgument(f"AppCountLogs: more than {MAX_BUCKETS} buckets; use larger ones")
        resp = api_pb2.AppCountLogsResponse(app_id=app_id)
        for start in sorted(counts):
            stdout, stderr, system = counts[start]
            bucket = resp.buckets.add(stdout_logs=stdout, stderr_logs=stderr, system_logs=system)
            bucket.bucket_start_at.FromSeconds(start)
        return resp
