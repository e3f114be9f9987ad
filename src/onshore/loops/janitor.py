"""The janitor: stops ephemeral apps whose client stopped heartbeating."""

from __future__ import annotations

import asyncio
import logging

from onshore.services.apps import AppService

log = logging.getLogger("onshore.janitor")


class Janitor:
    def __init__(self, apps: AppService, heartbeat_timeout: float, tick: float = 2.0) -> None:
        self._apps = apps
        self._timeout = heartbeat_timeout
        self._tick = tick

    async def run_once(self) -> int:
        expired = self._apps.expired(self._timeout)
        for app in expired:
            await self._apps.stop(app.app_id, f"its client sent no heartbeat for {self._timeout:.0f}s")
        return len(expired)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                await self.run_once()
            except Exception:
                log.exception("janitor tick failed")
