"""Web gateway benchmark: latency, throughput, cold first requests; against uvicorn serving the same app."""

from __future__ import annotations

from typing import Any

from harness import bench_server, percentile, run_client, summarize_ms

TARGET_ADDED_P50_MS = 2.0
TARGET_THROUGHPUT_RATIO = 0.5
TARGET_COLD_P50_MS = 600.0
CONCURRENCY = 64


def bench_web_gateway(requests: int, cold_samples: int) -> dict[str, Any]:
    with bench_server("web_gateway") as server:
        raw = run_client(server, "web.py", requests, CONCURRENCY, cold_samples, timeout=900)
        log_counts = server.log_counts()
    gateway, direct = raw["gateway"], raw["direct_uvicorn"]
    if raw["load_generator"] == "wrk":  # wrk reports each run's p50: the median of those
        lat_gateway = {"p50_ms": round(percentile(gateway["latency_p50_s"], 50) * 1000, 3)}
        lat_direct = {"p50_ms": round(percentile(direct["latency_p50_s"], 50) * 1000, 3)}
        lat_gateway["runs_p50_ms"] = [round(x * 1000, 3) for x in gateway["latency_p50_s"]]
        lat_direct["runs_p50_ms"] = [round(x * 1000, 3) for x in direct["latency_p50_s"]]
    else:
        lat_gateway, lat_direct = summarize_ms(gateway["latency_s"]), summarize_ms(direct["latency_s"])
    added = round(lat_gateway["p50_ms"] - lat_direct["p50_ms"], 2)
    rps_gateway = percentile(gateway["rps"], 50)
    rps_direct = percentile(direct["rps"], 50)
    ratio = round(rps_gateway / rps_direct, 3)
    cold = summarize_ms(raw["cold_first_request_s"])
    return {
        "load_generator": raw["load_generator"],
        "latency_c1": {"gateway": lat_gateway, "direct_uvicorn": lat_direct},
        "added_p50_ms": added,
        "throughput_c64_rps": {
            "gateway": [round(x, 1) for x in gateway["rps"]],
            "direct_uvicorn": [round(x, 1) for x in direct["rps"]],
        },
        "throughput_ratio_p50": ratio,
        "cold_first_request": cold,
        "server_log": log_counts,
        "targets": {
            "added_p50_ms": TARGET_ADDED_P50_MS,
            "throughput_ratio": TARGET_THROUGHPUT_RATIO,
            "cold_p50_ms": TARGET_COLD_P50_MS,
        },
        "meets_target": added <= TARGET_ADDED_P50_MS
        and ratio >= TARGET_THROUGHPUT_RATIO
        and cold["p50_ms"] <= TARGET_COLD_P50_MS,
    }
