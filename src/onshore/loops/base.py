"""The base of reconcile loops: run_once every interval (or when woken), failed ticks logged, a clean stop."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("onshore.loops")


class Loop:
    """A loop that calls run_once() every `interval` seconds, or sooner after wake().

    A tick that raises is logged and the loop goes on; stop() ends it after the tick in progress. Tests call
    run_once() directly, with the loop's collaborators on a fake clock, instead of running the loop.
    """

    name = "loop"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> None:
        raise NotImplementedError

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def start(self) -> None:
        """Run the loop in a task of its own, which close() ends and awaits."""
        self._task = asyncio.create_task(self.run(), name=self.name)

    async def close(self) -> None:
        self.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping:
                break
            try:
                await self.run_once()
            except Exception:
                log.exception("%s tick failed", self.name)
