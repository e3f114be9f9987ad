"""Client for `map_throughput`: a .map() over many trivial inputs, timed call to last result."""

from __future__ import annotations

import os
import sys
import time

import modal

app = modal.App("bench-map-throughput")


@app.function(scaledown_window=600)
def ident(x: int) -> tuple[int, str]:
    return x, os.environ["MODAL_TASK_ID"]  # which container ran it (pids are per container namespace)


def main() -> None:
    from _common import cpu_snapshot, cpu_used, emit, rpc_latencies, wait_until_quiet

    n = int(sys.argv[1])
    t0 = time.perf_counter()
    with app.run():
        app_run_s = time.perf_counter() - t0
        ident.remote(-1)  # one warm container, as a steady-state service would have
        rpc = rpc_latencies(200)
        wait_until_quiet()  # the server has replaced the spare process the first call used
        first_s = None
        # Per-result arrival times (seconds since the call) show ramp-up and steady-state rate.
        arrivals: list[float] = []
        per_task: dict[str, int] = {}
        before = cpu_snapshot()
        t0 = time.perf_counter()
        for expected, (x, task) in enumerate(ident.map(range(n))):
            now = time.perf_counter() - t0
            if first_s is None:
                first_s = now
            arrivals.append(now)
            per_task[task] = per_task.get(task, 0) + 1
            if x != expected:
                raise SystemExit(f"map result {expected} was {x}")
        total_s = time.perf_counter() - t0
        cpu = cpu_used(before, cpu_snapshot())
        # The same map again, on the containers the first one scaled out to (their start-up not included).
        wait_until_quiet()
        t0 = time.perf_counter()
        rerun = sum(1 for _ in ident.map(range(n)))
        rerun_s = time.perf_counter() - t0
    if len(arrivals) != n or rerun != n:
        raise SystemExit(f"map returned {len(arrivals)} results, expected {n}")
    emit(
        {
            "app_run_s": app_run_s,
            "n": n,
            "total_s": total_s,
            "first_result_s": first_s,
            "arrivals_s": arrivals,
            "inputs_per_container": sorted(per_task.values(), reverse=True),
            "rpc_s": rpc,
            "cpu_s": cpu,
            "rerun_s": rerun_s,
        }
    )


if __name__ == "__main__":
    main()
