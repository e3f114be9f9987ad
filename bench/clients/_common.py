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


def server_children(server_pid: int) -> list[int]:
    """Live direct children of the server process (its containers), read from /proc."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        if int(raw[raw.rindex(")") + 2 :].split()[1]) == server_pid:
            children.append(int(entry))
    return children


def wait_until_no_containers(timeout: float = 20.0) -> float:
    """Block until the server has no child processes (no container is alive); return the seconds waited."""
    server_pid = int(os.environ.get("BENCH_SERVER_PID", "0"))
    t0 = time.perf_counter()
    if not server_pid:
        time.sleep(1.0)
        return time.perf_counter() - t0
    while server_children(server_pid) and time.perf_counter() - t0 < timeout:
        time.sleep(0.02)
    return time.perf_counter() - t0


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
