"""Client for `volumes`: sequential write and read of a big file on this machine's disk, inside a container on
a mounted volume, and through `modal volume put` / `get` (VolumeFS v1 and v2), in one run."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import modal

CHUNK = 8 * 1024 * 1024
app = modal.App("bench-volumes")
vol = modal.Volume.from_name("bench-volumes-io", create_if_missing=True)


def _write_read(path: str, size: int) -> dict[str, float]:
    """Seconds to write `size` bytes (then fsync) and to read them back from disk (the file's pages dropped
    from the page cache first)."""
    block = os.urandom(CHUNK)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    written = 0
    while written < size:
        written += os.write(fd, block[: min(CHUNK, size - written)])
    os.fsync(fd)
    write_s = time.perf_counter() - t0
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    while os.read(fd, CHUNK):
        pass
    os.close(fd)
    return {"write_s": write_s, "read_s": time.perf_counter() - t0}


@app.function(volumes={"/data": vol}, timeout=1800)
def in_container(size: int) -> dict[str, float]:
    out = _write_read("/data/big.bin", size)
    t0 = time.perf_counter()
    vol.commit()
    out["commit_s"] = time.perf_counter() - t0
    return out


def _copy(source: str, dest: str) -> float:
    """Seconds for a plain copy of a file (synced), the disk work a put or a get does at the least."""
    t0 = time.perf_counter()
    with open(source, "rb") as src, open(dest, "wb") as out:
        while chunk := src.read(CHUNK):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    elapsed = time.perf_counter() - t0
    os.remove(dest)
    return elapsed


def _cli(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "modal", "volume", *args], check=True, capture_output=True)
    return time.perf_counter() - t0


def _round(index: int, size: int) -> dict[str, dict[str, float]]:
    """One pass over every measurement (the disk, a container, the CLI for v1 and v2)."""
    raw = _write_read("raw.bin", size)
    raw["copy_s"] = _copy("raw.bin", "copy.bin")
    out = {"raw": raw, "container": in_container.remote(size)}
    for version in (1, 2):
        name = f"bench-volumes-v{version}-{index}"
        _cli("create", name, "--version", str(version))
        put_s = _cli("put", "-f", name, "raw.bin", "/raw.bin")
        get_s = _cli("get", "--force", name, "/raw.bin", "got.bin")
        os.remove("got.bin")
        out[f"cli_v{version}"] = {"put_s": put_s, "get_s": get_s}
    os.remove("raw.bin")
    return out


def main() -> None:
    from _common import emit

    size = int(sys.argv[1])
    # This machine's disk is shared and its speed drifts between runs by several times: every measurement
    # is taken twice, in two interleaved passes, and each figure is the faster of its two.
    with app.run():
        in_container.remote(CHUNK)  # the container path warm: its image, mounts and client ready
        rounds = [_round(i, size) for i in range(2)]
    best = {
        key: {metric: min(r[key][metric] for r in rounds) for metric in rounds[0][key]} for key in rounds[0]
    }
    emit({"bytes": size, **best, "samples": rounds})


if __name__ == "__main__":
    main()
