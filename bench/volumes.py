"""Volume benchmark: a big file written and read inside a container, and put and got with the CLI, beside
plain file I/O on the same disk in the same run."""

from __future__ import annotations

from typing import Any

from harness import bench_server, run_client

TARGET_CONTAINER_RATIO = 0.8  # of raw disk throughput, each of write and read
TARGET_CLI_RATIO = 0.5


def _mb_s(size: int, seconds: float) -> float:
    return round(size / seconds / 1e6, 1)


def bench_volumes(size: int) -> dict[str, Any]:
    with bench_server("volumes") as server:
        raw = run_client(server, "volumes.py", size, timeout=3600)
        log_counts = server.log_counts()
    base = raw["raw"]
    out: dict[str, Any] = {
        "bytes": size,
        "raw_disk_mb_s": {
            "write": _mb_s(size, base["write_s"]),
            "read": _mb_s(size, base["read_s"]),
            "copy": _mb_s(size, base["copy_s"]),
        },
    }
    box = raw["container"]
    out["container_mb_s"] = {"write": _mb_s(size, box["write_s"]), "read": _mb_s(size, box["read_s"])}
    out["container_commit_mb_s"] = _mb_s(size, box["commit_s"])
    ratios = {
        "container_write": box["write_s"] and base["write_s"] / box["write_s"],
        "container_read": box["read_s"] and base["read_s"] / box["read_s"],
    }
    for version in (1, 2):
        cli = raw[f"cli_v{version}"]
        out[f"cli_v{version}_mb_s"] = {"put": _mb_s(size, cli["put_s"]), "get": _mb_s(size, cli["get_s"])}
        # `put` reads the local file and writes it into the volume, `get` reads it from the volume and writes
        # a local file: each is compared with a plain synced copy of the file on the same disk.
        ratios[f"cli_v{version}_put"] = base["copy_s"] / cli["put_s"]
        ratios[f"cli_v{version}_get"] = base["copy_s"] / cli["get_s"]
    out["ratios_to_raw"] = {k: round(v, 2) for k, v in ratios.items()}
    out["targets"] = {"container": TARGET_CONTAINER_RATIO, "cli": TARGET_CLI_RATIO}
    out["meets_target"] = {
        k: v >= (TARGET_CONTAINER_RATIO if k.startswith("container") else TARGET_CLI_RATIO)
        for k, v in ratios.items()
    }
    out["server_log"] = log_counts
    return out
