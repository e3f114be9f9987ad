"""The output of image builds, kept per image: clients follow a build live and catch up after reconnecting."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

MAX_ENTRIES = 20_000


@dataclass
class LogEntry:
    entry_id: int
    text: str
    timestamp: float


@dataclass
class _Log:
    entries: list[LogEntry] = field(default_factory=list)
    next_id: int = 1
    done: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class BuildLogs:
    def __init__(self) -> None:
        self._logs: dict[str, _Log] = {}

    def _get(self, image_id: str) -> _Log:
        log = self._logs.get(image_id)
        if log is None:
            log = self._logs[image_id] = _Log()
        return log

    def start(self, image_id: str) -> None:
        """A new build of this image: earlier output is dropped, followers wait for the new one."""
        old = self._logs.pop(image_id, None)
        log = self._get(image_id)
        if old is not None:
            log.next_id = old.next_id  # entry ids keep growing, so a follower's last id stays meaningful
            old.changed.set()

    def append(self, image_id: str, text: str) -> None:
        if not text:
            return
        log = self._get(image_id)
        log.entries.append(LogEntry(log.next_id, text, time.time()))
        log.next_id += 1
        if len(log.entries) > MAX_ENTRIES:
            del log.entries[: len(log.entries) - MAX_ENTRIES]
        log.changed.set()

    def finish(self, image_id: str) -> None:
        log = self._get(image_id)
        log.done = True
        log.changed.set()

    def since(self, image_id: str, last_entry_id: int) -> list[LogEntry]:
        log = self._logs.get(image_id)
        if log is None:
            return []
        return [e for e in log.entries if e.entry_id > last_entry_id]

    async def wait(self, image_id: str, last_entry_id: int, timeout: float) -> None:
        """Until there is output after `last_entry_id`, the build ends, or the timeout passes."""
        log = self._get(image_id)
        if log.done or (log.entries and log.entries[-1].entry_id > last_entry_id):
            return
        log.changed.clear()
        try:
            await asyncio.wait_for(log.changed.wait(), timeout)
        except TimeoutError:
            pass
