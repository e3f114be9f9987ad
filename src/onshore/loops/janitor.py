"""The janitor: stops ephemeral apps whose client stopped heartbeating, and deletes expired blobs."""

from __future__ import annotations

import asyncio
import logging
import time

from onshore.services.apps import AppService
from onshore.services.blobs import BlobService

log = logging.getLogger("onshore.janitor")


class Janitor:
    def __init__(
        self,
        apps: AppService,
        blobs: BlobService,
        heartbeat_timeout: float,
        tick: float = 2.0,
        blob_every: float = 600,
    ) -> None:
        self._apps = apps
        self._blobs = blobs
        self._timeout = heartbeat_timeout
        self._tick = tick
        self._blob_every = blob_every
        self._next_blob_gc = 0.0

    async def run_once(self) -> int:
        expired = self._apps.expired(self._timeout)
        for app in expired:
            await self._apps.stop(app.app_id, f"its client sent no heartbeat for {self._timeout:.0f}s")
        if time.monotonic() >= self._next_blob_gc:
            self._next_blob_gc = time.monotonic() + self._blob_every
            removed = await asyncio.to_thread(self._blobs.collect_garbage, time.time())
            if removed:
                log.info("deleted %d expired blobs", removed)
        return len(expired)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                await self.run_once()
            except Exception:
                log.exception("janitor tick failed")
