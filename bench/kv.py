"""Dict and Queue benchmark: Dict ops/s beside a plain SQLite loop, Queue round trips between containers."""

from __future__ import annotations

from typing import Any

from harness import bench_server, run_client, summarize_ms

TARGET_QUEUE_ROUND_TRIP_P50_MS = 5.0


def bench_dict_queue(ops: int, round_trips: int) -> dict[str, Any]:
    with bench_server("dict_queue") as server:
        raw = run_client(server, "kv.py", ops, round_trips, timeout=600)
        log_counts = server.log_counts()
    trip = summarize_ms(raw["queue_round_trip_s"])
    return {
        "dict_ops": ops,
        "dict_puts_per_s": round(raw["dict_puts_per_s"], 1),
        "dict_gets_per_s": round(raw["dict_gets_per_s"], 1),
        "sqlite_loop_puts_per_s": round(raw["sqlite_puts_per_s"], 1),
        "sqlite_loop_gets_per_s": round(raw["sqlite_gets_per_s"], 1),
        "queue_round_trip": trip,
        "server_log": log_counts,
        "target_queue_round_trip_p50_ms": TARGET_QUEUE_ROUND_TRIP_P50_MS,
        "meets_target": trip["p50_ms"] <= TARGET_QUEUE_ROUND_TRIP_P50_MS,
    }
