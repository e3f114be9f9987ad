"""Image benchmarks: cache-hit ImageGetOrCreate, pip_install("numpy") against venv+pip, cold starts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import bench_server, log, percentile, run_client, summarize_ms

TARGET_CACHE_HIT_P50_MS = 20.0
TARGET_BUILD_RATIO = 1 / 3
TARGET_PROCESS_COLD_P50_MS = 400.0
TARGET_DOCKER_COLD_P50_MS = 1500.0


def bench_image_cache_hit(samples: int) -> dict[str, Any]:
    with bench_server("image_cache_hit") as server:
        raw = run_client(server, "images.py", "cache_hit", samples)
        log_counts = server.log_counts()
    rpc = summarize_ms(raw["rpc_s"])
    return {
        "rpcs": len(raw["rpc_s"]),
        "image_get_or_create": rpc,
        "p50_ms": rpc["p50_ms"],
        "server_log": log_counts,
        "target_p50_ms": TARGET_CACHE_HIT_P50_MS,
        "meets_target": rpc["p50_ms"] <= TARGET_CACHE_HIT_P50_MS,
    }


def _venv_pip_numpy() -> float:
    """`python -m venv` then `pip install numpy`: the same environment, built without Onshore."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-venv-"))
    try:
        t0 = time.perf_counter()
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(tmp / "venv")], check=True, capture_output=True)
        subprocess.run(
            [str(tmp / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", "numpy"],
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_image_build_numpy(samples: int) -> dict[str, Any]:
    # Both sides run once untimed first, so each finds its package cache warm (pip's and uv's): the
    # comparison is of the build machinery, not of the network.
    log("image_build_numpy: baseline python -m venv + pip install numpy")
    baseline = [_venv_pip_numpy() for _ in range(samples + 1)][1:]
    with bench_server("image_build_numpy") as server:
        raw = run_client(server, "images.py", "build_numpy", samples + 1, timeout=1200)
        log_counts = server.log_counts()
    builds = raw["build_s"][1:]
    build_p50, base_p50 = percentile(builds, 50), percentile(baseline, 50)
    ratio = build_p50 / base_p50
    return {
        "samples": len(builds),
        "build": summarize_ms(builds, percentiles=(50,)),
        "first_build_ms": round(raw["build_s"][0] * 1000, 1),
        "baseline_venv_pip_install": summarize_ms(baseline, percentiles=(50,)),
        "build_over_baseline_p50": round(ratio, 3),
        "server_log": log_counts,
        "target_ratio": round(TARGET_BUILD_RATIO, 3),
        "meets_target": ratio <= TARGET_BUILD_RATIO,
    }


def bench_image_cold_start(samples: int, docker_host: str = "") -> dict[str, Any]:
    """The process runtime's figure, and the docker runtime's when a Docker engine is given."""
    result = _cold_start("process", [], samples, TARGET_PROCESS_COLD_P50_MS)
    if docker_host:
        args = ["--runtime", "docker", "--docker-host", docker_host, "--docker-network", "none"]
        result["docker"] = _cold_start("docker", args, samples, TARGET_DOCKER_COLD_P50_MS)
        result["meets_target"] = result["meets_target"] and result["docker"]["meets_target"]
    else:
        result["docker"] = {"skipped": "no --docker-host given"}
    return result


def _cold_start(runtime: str, args: list[str], samples: int, target: float) -> dict[str, Any]:
    with bench_server(f"image_cold_start_{runtime}", args) as server:
        raw = run_client(server, "images.py", "cold_start", samples, timeout=1200)
        log_counts = server.log_counts()
    remote = raw["remote_s"]
    p50 = round(percentile(remote, 50) * 1000, 1)
    return {
        "runtime": runtime,
        "samples": len(remote),
        "remote": summarize_ms(remote, percentiles=(50, 90)),
        "p50_ms": p50,
        "first_container_of_image_ms": round(raw["first_s"] * 1000, 1),
        "server_log": log_counts,
        "target_p50_ms": target,
        "meets_target": p50 <= target,
    }
