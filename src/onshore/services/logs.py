"""Container and build logs: an in-memory, bounded log per app, streamed live to followers."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from onshore.services.clock import Clock
from onshore.services.waiters import Waiters

MAX_ENTRIES_PER_APP = 20_000


@dataclass
class LogEntry:
    entry_id: int
    task_id: str
    function_id: str
    fd: int
    data: str
    timestamp: float


@dataclass
class _AppLog:
    entries: collections.deque[LogEntry] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_ENTRIES_PER_APP)
    )
    next_id: int = 1
    done: bool = False
    # Bumped to end the streams open now (a detached run's client leaving) without ending the app's log.
    epoch: int = 0
    waiters: Waiters = field(default_factory=Waiters)

    def notify(self) -> None:
        self.waiters.notify()


class LogService:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._apps: dict[str, _AppLog] = collections.defaultdict(_AppLog)

    def append(self, app_id: str, task_id: str, function_id: str, fd: int, data: str) -> None:
        log = self._apps[app_id]
        log.entries.append(LogEntry(log.next_id, task_id, function_id, fd, data, self._clock.now()))
        log.next_id += 1
        log.notify()

    def mark_done(self, app_id: str) -> None:
        log = self._apps[app_id]
        log.done = True
        log.notify()

    def release_followers(self, app_id: str) -> None:
        """End the streams that follow the app now, as if it were done; later followers are not affected."""
        log = self._apps[app_id]
        log.epoch += 1
        log.notify()

    def fetch(
        self,
        app_id: str,
        since: float,
        until: float,
        limit: int,
        *,
        task_id: str = "",
        function_id: str = "",
        fd: int = 0,
        search: str = "",
    ) -> list[LogEntry]:
        """The newest `limit` entries in [since, until) that match the filters, oldest first."""
        found = [
            e
            for e in self._apps[app_id].entries
            if since <= e.timestamp < until
            and (not task_id or e.task_id == task_id)
            and (not function_id or e.function_id == function_id)
            and (not fd or e.fd == fd)
            and (not search or search in e.data)
        ]
        return found[-limit:] if limit > 0 else found

    async def follow(
        self, app_id: str, last_entry_id: int, timeout: float, task_id: str = "", function_id: str = ""
    ) -> AsyncIterator[list[LogEntry] | None]:
        """Yields lists of new entries; yields None once when the app is done, then ends.

        Ends without None when the timeout passes (the client reconnects with its last entry id).
        """
        log = self._apps[app_id]
        epoch = log.epoch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            fresh = [
                e
                for e in log.entries
                if e.entry_id > last_entry_id
                and (not task_id or e.task_id == task_id)
                and (not function_id or e.function_id == function_id)
            ]
            if fresh:
                last_entry_id = fresh[-1].entry_id
                yield fresh
                continue
            if log.done or log.epoch != epoch:
                yield None
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await log.waiters.wait(remaining)
