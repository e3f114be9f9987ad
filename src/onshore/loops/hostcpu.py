"""The host's CPU use, and the gate holding a function's scale-out past the core count while CPUs are full."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from onshore.models import FunctionSpec
from onshore.services.clock import Clock

# Above this fraction of all cores busy, the host has no room for more CPU-bound containers.
CPU_BUSY_LIMIT = 0.8

CpuTimes = Callable[[], "tuple[float, float] | None"]


def read_cpu_times(path: str = "/proc/stat") -> tuple[float, float] | None:
    """(busy, total) CPU ticks of all cores since boot, from Linux's /proc/stat; None where unreadable."""
    try:
        with open(path) as f:
            first = f.readline().split()
    except OSError:
        return None
    if not first or first[0] != "cpu" or len(first) < 5:
        return None
    values = [float(v) for v in first[1:9]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    total = sum(values)
    return total - idle, total


def scale_up_allowance(current: int, want: int, cores: int, spec: FunctionSpec, headroom: bool) -> int:
    """How many of `want` more containers a function may start now. Pure: table-tested.

    Up to twice the host's core count (or the function's min_containers) at once. Past it, containers only
    add CPU contention when the function is CPU-bound, so they start only after the host's CPUs had headroom
    while the function ran at its current size (I/O-bound work, say): then it may double (at least `cores`
    more), so a burst of waiting calls is served in a few windows. (A CPU-bound map runs about as fast on
    two containers per core as on one: the caller and the server take CPU too.)
    """
    now = max(0, max(2 * cores, spec.min_containers) - current)
    if headroom:
        now = max(now, cores, current)
    return min(want, now)


@dataclass(frozen=True)
class CpuWindow:
    started: float  # monotonic time the window began
    busy: float  # the fraction of all cores busy during it


class ScaleOutGate:
    """Measures the host's CPU in windows of `window` seconds and remembers each function's last scale-up.

    A function has headroom when a whole window since it last scaled up or sat idle kept the CPUs below
    CPU_BUSY_LIMIT. Without CPU readings (not Linux) there is no gate: `headroom` answers None.
    """

    def __init__(self, cpu_times: CpuTimes, clock: Clock, window: float = 1.0) -> None:
        self._cpu_times = cpu_times
        self._clock = clock
        self._window = window
        self._mark: tuple[float, tuple[float, float]] | None = None
        self._last: CpuWindow | None = None
        self._scaled_at: dict[str, float] = {}
        self.tick()

    def tick(self) -> None:
        """Close the current window once it is `window` seconds long."""
        now = self._clock.monotonic()
        if self._mark is not None and now - self._mark[0] < self._window:
            return
        reading = self._cpu_times()
        if reading is None:
            self._mark, self._last = None, None
            return
        if self._mark is not None:
            (started, (busy0, total0)), (busy1, total1) = self._mark, reading
            if total1 > total0:
                self._last = CpuWindow(started, (busy1 - busy0) / (total1 - total0))
        self._mark = (now, reading)

    def headroom(self, function_id: str) -> bool | None:
        if self._mark is None:
            return None
        last = self._last
        since = self._scaled_at.get(function_id)
        if last is None or (since is not None and last.started < since):
            return False  # no whole window yet shows the function at its current size
        return last.busy < CPU_BUSY_LIMIT

    def reset(self, function_id: str) -> None:
        """The function scaled up, or sits idle: only a window from now on shows its CPU use at its size."""
        self._scaled_at[function_id] = self._clock.monotonic()

    def forget(self, function_id: str) -> None:
        self._scaled_at.pop(function_id, None)
