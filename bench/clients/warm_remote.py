"""Client for `warm_remote`: sequential .remote() round trips of a trivial function on a warm container."""

from __future__ import annotations

import os
import sys
import time

import modal

app = modal.App("bench-warm-remote")


@app.function(scaledown_window=600)
def echo(x: int) -> int:
    return x


def main() -> None:
    from _common import cpu_snapshot, cpu_used, emit, rpc_latencies, wait_until_quiet

    calls, warmup, block = (int(a) for a in sys.argv[1:4])
    t0 = time.perf_counter()
    with app.run():
        app_run_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert echo.remote(-1) == -1
        first_s = time.perf_counter() - t0
        for i in range(warmup):
            echo.remote(i)
        rpc_latencies(20)  # warm the baseline path too
        # Let the server finish replacing the spare process the first call used: that start-up would
        # otherwise share the CPU with (and add to the CPU count of) the measured calls.
        wait_until_quiet()
        for i in range(10):
            echo.remote(i)
        remote: list[float] = []
        rpc: list[float] = []
        cpu_remote = dict.fromkeys(("client", "server", "containers"), 0.0)
        # Interleave blocks of calls and baseline RPCs so a noisy neighbour hurts both alike.
        while len(remote) < calls:
            before = cpu_snapshot()
            for _ in range(min(block, calls - len(remote))):
                i = len(remote)
                t = time.perf_counter()
                result = echo.remote(i)
                remote.append(time.perf_counter() - t)
                if result != i:
                    raise SystemExit(f"echo.remote({i}) returned {result!r}")
            for part, used in cpu_used(before, cpu_snapshot()).items():
                cpu_remote[part] += used
            rpc.extend(rpc_latencies(max(1, block // 4)))
    emit(
        {
            "app_run_s": app_run_s,
            "first_call_s": first_s,
            "remote_s": remote,
            "rpc_s": rpc,
            "cpu_s": cpu_remote,
            "client_pid": os.getpid(),
        }
    )


if __name__ == "__main__":
    main()
