"""Scaling benchmark: scale-up reaction to a burst, batching's gain, and cold starts across functions."""

from __future__ import annotations

from typing import Any

from harness import bench_server, percentile, run_client

BURST = 8  # one-second calls at once on a cold function
TARGET_SCALE_UP_EXTRA_S = 1.0  # all BURST containers serving within this beyond a single cold start
BATCH_ITEMS = 64
TARGET_FIRST_CALLS_P50_MS = 100.0


def bench_scaling() -> dict[str, Any]:
    with bench_server("scaling") as server:
        raw = run_client(server, "scaling.py", BURST, BATCH_ITEMS, timeout=600)
        log_counts = server.log_counts()
    starts = [s - raw["called_at"] for s in raw["starts"]]
    # The first input's start is one cold start; the last one starts when the last container serves.
    single, last = starts[0], starts[-1]
    firsts = [s * 1000 for s in raw["first_calls_s"]]
    first_p50 = round(percentile(firsts, 50), 1)
    return {
        "burst": BURST,
        "burst_containers": raw["burst_containers"],
        "burst_input_starts_s": [round(s, 3) for s in starts],
        "single_cold_start_s": round(single, 3),
        "scale_up_extra_s": round(last - single, 3),
        "target_scale_up_extra_s": TARGET_SCALE_UP_EXTRA_S,
        "meets_scale_up_target": last - single <= TARGET_SCALE_UP_EXTRA_S,
        "batch_items": raw["items"],
        "unbatched_s": round(raw["unbatched_s"], 3),
        "batched_s": round(raw["batched_s"], 3),
        "batching_speedup": round(raw["unbatched_s"] / raw["batched_s"], 2),
        "first_calls_ms": [round(f, 1) for f in firsts],
        "first_calls_p50_ms": first_p50,
        "target_first_calls_p50_ms": TARGET_FIRST_CALLS_P50_MS,
        "meets_first_calls_target": first_p50 <= TARGET_FIRST_CALLS_P50_MS,
        "server_log": log_counts,
    }
