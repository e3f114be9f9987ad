"""Run Onshore's benchmarks: a real server, the real modal client; one JSON object on stdout."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import images
import kv
import scaling
import volumes
import web
from harness import (
    REPO,
    BenchServer,
    ClientError,
    bench_server,
    log,
    percentile,
    run_client,
    summarize_ms,
    time_python,
)

# Targets from the performance issue (measured on a 2-core machine).
TARGET_WARM_P50_MS = 3.0
TARGET_COLD_P50_MS = 400.0
TARGET_MAP_PER_S = 500.0

# Concurrent cold calls in the cold-start burst: the server's default container limit on a 2-core machine.
BURST = 4


@dataclass(frozen=True)
class Sizes:
    warm_calls: int
    warm_warmup: int
    cold_samples: int
    map_inputs: int
    python_samples: int
    image_rpcs: int
    image_builds: int
    web_requests: int
    web_cold_samples: int
    kv_ops: int
    kv_round_trips: int
    volume_bytes: int
    docker_host: str = ""  # a Docker engine for the docker runtime's figures (--docker-host); "" skips them


FULL = Sizes(
    warm_calls=1000,
    warm_warmup=100,
    cold_samples=12,
    map_inputs=10_000,
    python_samples=5,
    image_rpcs=200,
    image_builds=3,
    web_requests=2000,
    web_cold_samples=8,
    kv_ops=1000,
    kv_round_trips=300,
    volume_bytes=1024**3,
)
QUICK = Sizes(
    warm_calls=150,
    warm_warmup=20,
    cold_samples=3,
    map_inputs=1_000,
    python_samples=2,
    image_rpcs=30,
    image_builds=1,
    web_requests=400,
    web_cold_samples=2,
    kv_ops=200,
    kv_round_trips=50,
    volume_bytes=64 * 1024**2,
)


def bench_warm_remote(sizes: Sizes) -> dict[str, Any]:
    with bench_server("warm_remote") as server:
        raw = run_client(server, "warm_remote.py", sizes.warm_calls, sizes.warm_warmup, 100)
        result = _finish(
            server,
            {
                "calls": len(raw["remote_s"]),
                "warmup_calls": sizes.warm_warmup,
                "remote": summarize_ms(raw["remote_s"]),
                "baseline_hello_rpc": summarize_ms(raw["rpc_s"]),
                "app_run_ms": round(raw["app_run_s"] * 1000, 1),
                "first_call_ms": round(raw["first_call_s"] * 1000, 1),
                # Where a call's time goes: CPU used per call by each process (containers: the serving one
                # and any idle spares). A sum near the mean latency: the round trip is CPU-bound, hop by hop.
                "cpu_ms_per_call": _per(raw["cpu_s"], len(raw["remote_s"])),
            },
        )
    p50 = result["remote"]["p50_ms"]
    result["p50_ms"], result["p99_ms"], result["mean_ms"] = (
        p50,
        result["remote"]["p99_ms"],
        result["remote"]["mean_ms"],
    )
    result["p50_over_hello_rpc_p50"] = round(p50 / result["baseline_hello_rpc"]["p50_ms"], 2)
    result["target_p50_ms"] = TARGET_WARM_P50_MS
    result["meets_target"] = p50 <= TARGET_WARM_P50_MS
    return result


def bench_cold_start(sizes: Sizes) -> dict[str, Any]:
    # Baselines first, on a quiet machine: a container can not start faster than `python -c "import modal"`.
    python_floor = time_python("pass", sizes.python_samples)
    import_floor = time_python("import modal", sizes.python_samples)
    with bench_server("cold_start") as server:
        raw = run_client(server, "cold_start.py", sizes.cold_samples, BURST)
        first, samples = raw["samples"][0], raw["samples"][1:]
        result = _finish(server, {"samples": len(samples)})
    remote = [s["remote_s"] for s in samples]
    # Phases, from the client's and the container's wall clocks (same machine; process start has 10 ms ticks).
    phases = {
        "call_to_user_import": [s["imported_at"] - s["called_at"] for s in samples],
        "user_import_to_function_run": [s["ran_at"] - s["imported_at"] for s in samples],
        "function_run_to_result": [s["returned_at"] - s["ran_at"] for s in samples],
    }
    p50 = round(percentile(remote, 50) * 1000, 1)
    result.update(
        {
            "p50_ms": p50,
            "p90_ms": round(percentile(remote, 90) * 1000, 1),
            "remote": summarize_ms(remote, percentiles=(50, 90)),
            "phases_p50_ms": {k: round(percentile(v, 50) * 1000, 1) for k, v in phases.items()},
            # How long the container's process had existed when the user module was imported. Far above the
            # call's duration: the server handed the call a process it had started ahead of time.
            "process_age_at_user_import_p50_ms": round(
                percentile([s["imported_at"] - s["process_started_at"] for s in samples], 50) * 1000, 1
            ),
            "first_container_on_server_ms": round(first["remote_s"] * 1000, 1),
            "app_run_p50_ms": round(percentile([s["app_run_s"] for s in samples], 50) * 1000, 1),
            "app_stop_p50_ms": round(percentile([s["app_stop_s"] for s in samples], 50) * 1000, 1),
            "wait_for_quiet_server_p50_ms": round(percentile([s["waited_s"] for s in samples], 50) * 1000, 1),
            "burst": _burst(raw["burst"]),
            "baseline_python_startup": python_floor,
            "baseline_import_modal": import_floor,
            "p50_over_import_modal_p50": round(p50 / import_floor["p50_ms"], 2),
            "target_p50_ms": TARGET_COLD_P50_MS,
            "meets_target": p50 <= TARGET_COLD_P50_MS,
        }
    )
    return result


def _burst(calls: list[dict[str, float]]) -> dict[str, Any]:
    """Latencies of the burst's concurrent cold calls, split by whether a spare process served them."""
    # A process that existed before the call was a spare the server had started ahead of time.
    pooled = [c["process_started_at"] < c["called_at"] - 0.02 for c in calls]
    return {
        "calls": len(calls),
        "remote_ms_sorted": sorted(round(c["remote_s"] * 1000, 1) for c in calls),
        "served_by_spare_process": sum(pooled),
        "on_demand_process_remote_ms": sorted(
            round(c["remote_s"] * 1000, 1) for c, p in zip(calls, pooled, strict=True) if not p
        ),
    }


def bench_map_throughput(sizes: Sizes) -> dict[str, Any]:
    with bench_server("map_throughput") as server:
        raw = run_client(server, "map_throughput.py", sizes.map_inputs)
        result = _finish(server, {"inputs": raw["n"]})
    n, arrivals = raw["n"], raw["arrivals_s"]
    lo, hi = int(n * 0.1), int(n * 0.9) - 1
    steady = (hi - lo) / (arrivals[hi] - arrivals[lo]) if arrivals[hi] > arrivals[lo] else float("nan")
    rpc = summarize_ms(raw["rpc_s"])
    per_s = n / raw["total_s"]
    result.update(
        {
            "inputs_per_s": round(per_s, 1),
            "total_s": round(raw["total_s"], 3),
            "first_result_ms": round(raw["first_result_s"] * 1000, 1),
            "steady_inputs_per_s_p10_p90": round(steady, 1),
            "containers_used": len(raw["inputs_per_container"]),
            "inputs_per_container": raw["inputs_per_container"],
            "cpu_ms_per_input": _per(raw["cpu_s"], n),
            # The rate the machine's CPUs could sustain at this CPU cost per input if nothing else ran:
            # noise-resistant (CPU per input changes little when a neighbour takes CPU time away).
            "cpu_bound_ceiling_inputs_per_s": round(
                (os.cpu_count() or 1) / (sum(raw["cpu_s"].values()) / n), 1
            ),
            # Share of all the machine's CPUs that the client, server and containers kept busy during the map.
            "cpu_busy_fraction": round(
                sum(raw["cpu_s"].values()) / (raw["total_s"] * (os.cpu_count() or 1)), 2
            ),
            # The same map run again on the containers the first run scaled out to: the rate without
            # container start-ups (the target is judged on the first run).
            "rerun_on_warm_containers_inputs_per_s": round(n / raw["rerun_s"], 1),
            "baseline_hello_rpc": rpc,
            "baseline_hello_rpcs_per_s": round(1000.0 / rpc["mean_ms"], 1),
            "target_inputs_per_s": TARGET_MAP_PER_S,
            "meets_target": per_s >= TARGET_MAP_PER_S,
        }
    )
    return result


def _per(cpu_s: dict[str, float], count: int) -> dict[str, float]:
    out = {part: round(seconds * 1000 / count, 3) for part, seconds in cpu_s.items()}
    out["total"] = round(sum(cpu_s.values()) * 1000 / count, 3)
    return out


def _finish(server: BenchServer, result: dict[str, Any]) -> dict[str, Any]:
    """Facts about the server run every benchmark reports."""
    result["server_startup_ms"] = round(server.startup_s * 1000, 1)
    result["server_log"] = server.log_counts()
    return result


BENCHMARKS: dict[str, Callable[[Sizes], dict[str, Any]]] = {
    "warm_remote": bench_warm_remote,
    "cold_start": bench_cold_start,
    "map_throughput": bench_map_throughput,
    "image_cache_hit": lambda sizes: images.bench_image_cache_hit(sizes.image_rpcs),
    "image_build_numpy": lambda sizes: images.bench_image_build_numpy(sizes.image_builds),
    "image_cold_start": lambda sizes: images.bench_image_cold_start(sizes.cold_samples, sizes.docker_host),
    "web_gateway": lambda sizes: web.bench_web_gateway(sizes.web_requests, sizes.web_cold_samples),
    "dict_queue": lambda sizes: kv.bench_dict_queue(sizes.kv_ops, sizes.kv_round_trips),
    "volumes": lambda sizes: volumes.bench_volumes(sizes.volume_bytes),
    "scaling": lambda sizes: scaling.bench_scaling(),
}


def machine_facts() -> dict[str, Any]:
    import modal

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", "src"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        # The interpreter the client scripts, the server and the default image's containers all run on:
        # its build matters (a PGO/LTO build such as a distribution's is faster than a plain source build).
        "python_executable": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        "python_build": " ".join(platform.python_build()),
        "modal_client": modal.__version__,
        "platform": platform.platform(),
        "onshore_commit": commit,
        "onshore_src_dirty": dirty,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sample sizes: a smoke check under a minute"
    )
    parser.add_argument(
        "--docker-host",
        default="",
        metavar="URL",
        help="a Docker engine (e.g. unix:///var/run/docker.sock) for the docker runtime's image cold start",
    )
    args = parser.parse_args(argv)
    sizes = dataclasses.replace(QUICK if args.quick else FULL, docker_host=args.docker_host)
    names = args.only or list(BENCHMARKS)
    report: dict[str, Any] = {
        "machine": machine_facts(),
        "mode": "quick" if args.quick else "full",
        "sizes": sizes.__dict__,
        "benchmarks": {},
    }
    started = time.perf_counter()
    failed = False
    for name in names:
        log(f"{name}: starting")
        t0 = time.perf_counter()
        try:
            result = BENCHMARKS[name](sizes)
        except (ClientError, RuntimeError, KeyError, ValueError, ZeroDivisionError) as exc:
            failed = True
            log(f"{name}: FAILED: {exc}")
            result = {"error": str(exc)[-4000:], "traceback": traceback.format_exc()[-2000:]}
        result["wall_s"] = round(time.perf_counter() - t0, 2)
        report["benchmarks"][name] = result
        log(f"{name}: done in {result['wall_s']} s")
    report["wall_s"] = round(time.perf_counter() - started, 2)
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    json.dump(report, sys.stdout, indent=2)
    print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
