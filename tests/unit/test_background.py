"""Owned background work and the loop base: failures are logged, stop and close end everything they own."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from onshore.background import Background
from onshore.loops.base import Loop
from onshore.loops.janitor import Janitor
from onshore.models import AppState
from onshore.services.apps import AppService
from onshore.services.blobs import BlobService
from onshore.services.calls import CallService
from onshore.services.clock import FakeClock
from onshore.store.memory import memory_store


async def test_background_logs_a_failure_and_close_ends_what_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    background = Background("unit")

    async def fails() -> None:
        raise RuntimeError("boom")

    ended: list[str] = []

    async def runs_forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            ended.append("cancelled and awaited")

    with caplog.at_level(logging.ERROR, logger="onshore.background"):
        background.spawn(fails(), "fails")
        background.spawn(runs_forever(), "sleeper")
        await asyncio.sleep(0.01)
    assert "background task 'unit: fails' failed" in caplog.text and "boom" in caplog.text
    assert background.running == 1  # the failed one is no longer held; the sleeper is
    await background.close()
    assert ended == ["cancelled and awaited"] and background.running == 0

    # After close nothing new starts (and the coroutine is closed, not left unawaited).
    late = runs_forever()
    assert background.spawn(late, "late") is None
    assert late.cr_frame is None


class _Counting(Loop):
    name = "counting"

    def __init__(self) -> None:
        super().__init__(interval=3600)  # only wake() makes it tick here
        self.ticks = 0

    async def run_once(self) -> None:
        self.ticks += 1
        if self.ticks == 1:
            raise RuntimeError("first tick fails")


async def test_a_loop_ticks_when_woken_survives_a_failed_tick_and_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = _Counting()
    task = asyncio.create_task(loop.run())
    with caplog.at_level(logging.ERROR, logger="onshore.loops"):
        for _ in range(2):
            loop.wake()
            await asyncio.sleep(0.01)
    assert loop.ticks == 2 and "counting tick failed" in caplog.text
    loop.stop()
    await asyncio.wait_for(task, 1.0)  # ends without a cancel


async def test_the_janitor_steps_on_a_fake_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    store = memory_store()
    apps = AppService(store, clock)
    app = apps.create("idle client", AppState.EPHEMERAL, "main")
    calls = CallService(store, lambda function_id: None, lambda status, message: b"", clock)
    blobs = BlobService(tmp_path / "blobs", b"k" * 32, "http://127.0.0.1:1", clock)
    janitor = Janitor(apps, blobs, calls, clock, heartbeat_timeout=60)
    await janitor.run_once()
    assert apps.get(app.app_id).state == AppState.EPHEMERAL
    clock.advance(61)  # no heartbeat for longer than the timeout
    await janitor.run_once()
    assert apps.get(app.app_id).state == AppState.STOPPED
