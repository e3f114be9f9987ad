"""The scheduler: runs each due schedule once, then sleeps until the next one is due (a second at most)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from onshore.errors import OnshoreError
from onshore.loops.base import Loop
from onshore.services.clock import Clock
from onshore.services.schedules import ScheduleService

log = logging.getLogger("onshore.scheduler")

MIN_SLEEP = 0.01


class Scheduler(Loop):
    """start(function_id) starts a run and returns its call's id (the composition root gives it the invoke
    path); a run that cannot start is logged, and its schedule moves on to its next time all the same."""

    name = "scheduler"

    def __init__(
        self, schedules: ScheduleService, start: Callable[[str], str], clock: Clock, tick: float = 1.0
    ) -> None:
        super().__init__(tick)
        self._schedules = schedules
        self._start = start
        self._clock = clock
        self._tick = tick

    async def run_once(self) -> None:
        try:
            for record in self._schedules.due():
                call_id = ""
                try:
                    call_id = self._start(record.function_id)
                    log.info("scheduled run of %s (%s): call %s", record.tag, record.function_id, call_id)
                except OnshoreError as exc:
                    log.warning(
                        "scheduled run of %s (%s) not started: %s", record.tag, record.function_id, exc
                    )
                except Exception:
                    log.exception("scheduled run of %s (%s) failed to start", record.tag, record.function_id)
                try:
                    self._schedules.advance(record.function_id, call_id)
                except Exception:
                    log.exception("could not record the run of schedule %s", record.function_id)
        finally:
            upcoming = self._schedules.next_due()
            wait = self._tick if upcoming is None else upcoming - self._clock.now()
            self.interval = min(self._tick, max(MIN_SLEEP, wait))
