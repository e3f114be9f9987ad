"""Core pinning for process containers: each starts on one core and gets every core once it needs more."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field

log = logging.getLogger("onshore.runtime.affinity")

# How often a pinned container's threads are looked at, and how long of that they may wait to run on their
# core before the container gets every core: waiting that long means it has more to run than one core.
WINDOW_SECONDS = 1.0
WIDEN_AFTER_WAIT = 0.2


def needs_more_cores(waited_ns: int, window_s: float) -> bool:
    """Whether threads that waited `waited_ns` to run during a window of `window_s` want more than a core."""
    return waited_ns > WIDEN_AFTER_WAIT * window_s * 1e9


def least_used(cores: list[int], pinned: list[int]) -> int:
    """The core with the fewest containers pinned to it (the last such core: the first is the busiest with
    everything else the host runs)."""
    return min(reversed(cores), key=pinned.count)


def tree_tids(pid: int) -> list[int]:
    """Every thread of the process `pid` and of its descendants (Linux /proc)."""
    tids, todo = [], [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{current}/task"):
                tids.append(int(tid))
                with contextlib.suppress(OSError, ValueError):
                    with open(f"/proc/{current}/task/{tid}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
    return tids


def _waited_ns(tid: int) -> int | None:
    """Nanoseconds the thread has spent runnable but waiting for a CPU (/proc/<tid>/schedstat)."""
    try:
        with open(f"/proc/{tid}/schedstat") as f:
            return int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _set_cores(tids: list[int], cores: set[int]) -> None:
    for tid in tids:
        with contextlib.suppress(OSError):  # a thread that has just ended
            os.sched_setaffinity(tid, cores)


@dataclass
class _Pinned:
    pid: int
    core: int
    waited: dict[int, int] = field(default_factory=dict)  # thread -> its wait time at the last look


class CorePinning:
    """Pins each container to one core and widens it to all the server's cores when one is not enough.

    A container's Python threads hand work to each other on every call; on one core those hand-offs are
    cheap, across cores each is a wake-up of another CPU. Once a pinned container's threads wait to run
    for WIDEN_AFTER_WAIT of a window (CPU-bound threads of its own, or the core busy with other work), it
    gets every core for the rest of its life. Disabled (pin does nothing) with fewer than two cores, off
    Linux, or without the kernel's per-thread scheduler statistics.
    """

    def __init__(self, cores: list[int] | None = None) -> None:
        usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.cores = usable if cores is None else cores
        # Without run-queue wait times (a kernel without schedstats) a container that needs more cores
        # could not be told apart: then nothing is pinned.
        linux = sys.platform == "linux"
        self.enabled = linux and len(self.cores) >= 2 and _waited_ns(os.getpid()) is not None
        self._pinned: dict[str, _Pinned] = {}
        self._loop_task: asyncio.Task[None] | None = None

    def pin(self, task_id: str, pid: int) -> None:
        """Pin the container whose first process is `pid` (and everything under it) to one core."""
        if not self.enabled:
            return
        core = least_used(self.cores, [p.core for p in self._pinned.values()])
        entry = _Pinned(pid, core)
        tids = tree_tids(pid)
        _set_cores(tids, {core})
        entry.waited = {t: w for t in tids if (w := _waited_ns(t)) is not None}
        self._pinned[task_id] = entry
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    def release(self, task_id: str) -> None:
        self._pinned.pop(task_id, None)

    def pinned_core(self, task_id: str) -> int | None:
        entry = self._pinned.get(task_id)
        return entry.core if entry is not None else None

    def check(self, window_s: float = WINDOW_SECONDS) -> None:
        """Look at every pinned container once: pin threads it started since, widen those that need it."""
        for task_id, entry in list(self._pinned.items()):
            tids = tree_tids(entry.pid)
            if not tids:
                continue
            waited, now = 0, {}
            for tid in tids:
                value = _waited_ns(tid)
                if value is not None:
                    now[tid] = value
                    waited += value - entry.waited.get(tid, 0)
            # Threads inherit their creator's core; only one created while `pin` walked the tree may not have.
            new = [tid for tid in tids if tid not in entry.waited]
            entry.waited = now
            if needs_more_cores(waited, window_s):
                _set_cores(tids, set(self.cores))
                del self._pinned[task_id]
                log.debug("container %s needs more than one core: its threads may use every core", task_id)
            else:
                _set_cores(new, {entry.core})

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while self._pinned:
            await asyncio.sleep(WINDOW_SECONDS)
            now = loop.time()
            try:
                self.check(now - last)
            except Exception:  # never let a /proc surprise stop the runtime
                log.exception("checking pinned containers failed")
            last = now
        self._loop_task = None

    def close(self) -> None:
        self._pinned.clear()
        if self._loop_task is not None:
            self._loop_task.cancel()
            self._loop_task = None
