"""Owned background work: each task started off a request is kept, its failure logged, awaited on stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("onshore.background")


class Background:
    """The tasks a component starts and does not await itself (container stops, starts, refills).

    A task is referenced until it ends (the event loop keeps only weak references), an exception it ends with
    is logged with the task's name, and close() cancels what is still running and waits for it.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        """Run coro in the background; None (and coro closed) once close() has begun."""
        if self._closed:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._name}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task %r failed", task.get_name(), exc_info=exc)

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def close(self, timeout: float = 10.0, cancel: bool = True) -> None:
        """Start nothing more; cancel the tasks still running (or, cancel=False, let them finish) and wait up
        to timeout until each has ended."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks if cancel else ():
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                log.warning(
                    "background task %r did not end within %.0fs of its cancel", task.get_name(), timeout
                )
