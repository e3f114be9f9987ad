"""Ends of inputs that no caller waits on, recorded through the store even while it fails for a while."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from onshore.errors import Unavailable
from onshore.models import Payload
from onshore.services.call_state import PendingInput

log = logging.getLogger("onshore.calls")

Finish = Callable[[PendingInput, int, Payload], None]


class UnrecordedEnds:
    """Ends an input (a timeout, a dead container, a stopped app) with `finish`, which writes the store.

    If the store fails, the end is queued and one timer writes the queue once the database answers (backing
    off up to 30 s), so a locked database costs the event loop one busy wait per try, not one per input. An
    entry whose attempt has moved on meanwhile (the input finished or runs again) is dropped.
    """

    def __init__(self, finish: Finish) -> None:
        self._finish = finish
        # (input, status, result, its task, its attempt)
        self._queue: collections.deque[tuple[PendingInput, int, Payload, str, int]] = collections.deque()
        self._delay = 1.0

    def end(self, item: PendingInput, status: int, result: Payload) -> None:
        entry = (item, status, result, item.task_id, item.retry_count)
        if self._queue:
            self._queue.append(entry)  # the store failed a moment ago: wait in line
            return
        try:
            self._finish(item, status, result)
        except Unavailable as exc:
            log.warning("could not record the end of input %s yet (%s); trying again", item.input_id, exc)
            self._queue.append(entry)
            self._retry_in(1.0)

    def _retry_in(self, delay: float) -> None:
        self._delay = delay
        asyncio.get_running_loop().call_later(delay, self._record)

    def _record(self) -> None:
        while self._queue:
            item, status, result, task_id, retry_count = self._queue[0]
            if not item.done and (item.task_id, item.retry_count) == (task_id, retry_count):
                try:
                    self._finish(item, status, result)
                except Unavailable:
                    self._retry_in(min(30.0, self._delay * 2))
                    return
            self._queue.popleft()
