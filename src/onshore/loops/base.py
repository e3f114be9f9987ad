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

    async def run_once(self) -> None:
        raise NotImplementedError

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

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
