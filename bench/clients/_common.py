"""Helpers for the benchmark client scripts (imported only on the client side, never in a container)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "


def emit(result: dict[str, Any]) -> None:
    """Hand the result to the harness: one prefixed JSON line on stdout."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from the 3rd on: state, ppid, ...


def server_tree_cpu(server_pid: int) -> tuple[frozenset[int], int]:
    """The server's live descendants and the CPU ticks (user + system) that it and they have used."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents[int(entry)] = int(fields[1])
                ticks[int(entry)] = int(fields[11]) + int(fields[12])
    tree = {server_pid}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return frozenset(tree - {server_pid}), sum(ticks.get(pid, 0) for pid in tree)


def wait_until_quiet(timeout: float = 20.0, window: float = 0.3, max_ticks: int = 2) -> float:
    """Block until the server and every process under it sit idle; return the seconds waited.

    Quiet means: over `window` seconds no process under the server started or ended, and all of them together
    used at most `max_ticks` CPU ticks (10 ms each). So the previous sample's container has exited and any
    spare container process the server starts behind it is fully up before the next sample begins.
    """
    server_pid = int(os.environ.get("BENCH_SERVER_PID", "0"))
    t0 = time.perf_counter()
    if not server_pid:
        time.sleep(2.0)
        return time.perf_counter() - t0
    pids, ticks = server_tree_cpu(server_pid)
    while time.perf_counter() - t0 < timeout:
        time.sleep(window)
        now_pids, now_ticks = server_tree_cpu(server_pid)
        if now_pids == pids and now_ticks - ticks <= max_ticks:
            break
        pids, ticks = now_pids, now_ticks
    return time.perf_counter() - t0


def cpu_snapshot() -> dict[str, float]:
    """CPU seconds used so far by this client, by the server process, and by the live processes under it."""
    server_pid = int(os.environ.get("BENCH_SERVER_PID", "0"))
    tick = os.sysconf("SC_CLK_TCK")
    out = {"client": time.process_time(), "server": 0.0, "containers": 0.0}
    if server_pid:
        fields = _stat_fields(server_pid)
        if fields is not None:
            out["server"] = (int(fields[11]) + int(fields[12])) / tick
            _, total = server_tree_cpu(server_pid)
            out["containers"] = total / tick - out["server"]
    return out


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per part between two snapshots (containers: only those alive at both ends count fully)."""
    return {k: after[k] - before[k] for k in before}


def rpc_latencies(n: int) -> list[float]:
    """Durations of `n` sequential ClientHello RPCs through the same (sync) client a .remote() uses."""
    import modal

    client = modal.Client.from_env()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.hello()
        out.append(time.perf_counter() - t0)
    return out
