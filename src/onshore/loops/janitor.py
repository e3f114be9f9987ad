"""The janitor: stops apps whose clients stopped heartbeating, forgets abandoned calls, deletes old blobs,
ephemeral Dicts, Queues and Volumes nobody heartbeats, queue partitions past their TTL, and volume files no
volume needs."""

from __future__ import annotations

import asyncio
import logging

from onshore.loops.base import Loop
from onshore.services.apps import AppService
from onshore.services.blobs import BlobService
from onshore.services.calls import CallService
from onshore.services.clock import Clock
from onshore.services.kv import KvService
from onshore.services.volumes import VolumeService

log = logging.getLogger("onshore.janitor")

# A finished call nobody has asked about for this long leaves memory: a caller that went away never
# acknowledges its outputs (a map's client polls at least every 55 s while it runs); a spawned call's
# outputs stay in the store and are loaded again when asked for.
ABANDONED_CALL_SECONDS = 600.0


class Janitor(Loop):
    name = "janitor"

    def __init__(
        self,
        apps: AppService,
        blobs: BlobService,
        calls: CallService,
        clock: Clock,
        heartbeat_timeout: float,
        tick: float = 2.0,
        blob_every: float = 600,
        kv: KvService | None = None,
        kv_every: float = 60.0,
        volumes: VolumeService | None = None,
    ) -> None:
        super().__init__(tick)
        self._apps = apps
        self._blobs = blobs
        self._calls = calls
        self._clock = clock
        self._timeout = heartbeat_timeout
        self._blob_every = blob_every
        self._next_blob_gc = 0.0
        self._kv = kv
        self._kv_every = kv_every
        self._next_kv_gc = 0.0
        self._volumes = volumes

    async def run_once(self) -> None:
        expired = self._apps.expired(self._timeout)
        for app in expired:
            await self._apps.stop(app.app_id, f"its client sent no heartbeat for {self._timeout:.0f}s")
        forgotten = self._calls.release_idle(ABANDONED_CALL_SECONDS)
        if forgotten:
            log.info("forgot %d finished calls whose callers went away", forgotten)
        if self._clock.monotonic() >= self._next_blob_gc:
            self._next_blob_gc = self._clock.monotonic() + self._blob_every
            removed = await asyncio.to_thread(self._blobs.collect_garbage, self._clock.now())
            if removed:
                log.info("deleted %d expired blobs", removed)
            if self._volumes is not None:
                mounted = self._volumes.mounted_volumes()  # read here, on the loop that changes it
                removed = await asyncio.to_thread(self._volumes.collect, self._clock.now(), mounted)
                if removed:
                    log.info("deleted %d volume files and snapshots no volume needs", removed)
        if self._kv is not None and self._clock.monotonic() >= self._next_kv_gc:
            self._next_kv_gc = self._clock.monotonic() + self._kv_every
            gone = self._kv.expire()
            if gone:
                log.info("removed %d expired ephemeral Dicts/Queues and queue partitions", gone)
