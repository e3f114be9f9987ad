"""Hard memory and CPU limits ((request, limit) tuples) on the process runtime, enforced with cgroups."""

from __future__ import annotations

from pathlib import Path

import pytest

from onshore.runtimes.process.cgroups import Cgroups
from tests.conftest import ServerProcess, results, run_modal, write_app

pytestmark = pytest.mark.skipif(
    not Cgroups.probe().available, reason=f"no usable cgroups here: {Cgroups.probe().reason}"
)

APP = """
import json
import resource
import time

import modal

app = modal.App("onshore-test-limits")
custom = modal.Image.debian_slim().env({"LIMITS_TEST": "1"})


@app.function(memory=(64, 256))
def hog() -> int:
    blocks = []
    for _ in range(64):
        blocks.append(bytearray(32 * 1024 * 1024))  # 2 GiB in all, far over the limit
    return len(blocks)


@app.function(image=custom, memory=(64, 256))
def hog_isolated() -> int:
    return hog.local()


@app.function(cpu=(0.125, 0.25))
def burn() -> float:
    start = time.monotonic()
    while time.monotonic() - start < 2.0:
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@app.function()
def fine() -> str:
    return "still serving"


@app.local_entrypoint()
def main() -> None:
    for name, fn in (("hog", hog), ("hog_isolated", hog_isolated)):
        try:
            print("RESULT " + name, json.dumps(fn.remote()))
        except Exception as exc:
            print("RESULT " + name, json.dumps(f"{type(exc).__name__}: {exc}"))
    print("RESULT burn", json.dumps(burn.remote()))
    print("RESULT fine", json.dumps(fine.remote()))
"""


def test_memory_and_cpu_limits(server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(tmp_path, "limits_app.py", APP)
    result = run_modal(server, "run", str(app), timeout=300)
    assert result.returncode == 0, result.output
    found = results(result)
    for name in ("hog", "hog_isolated"):
        assert "ran out of memory (its limit is 256 MiB)" in found[name], found
    # 2 s of spinning under a quarter of a core uses about 0.5 s of CPU (2 s without the limit).
    assert found["burn"] < 1.0, found
    # The server is healthy after its containers were OOM-killed.
    assert found["fine"] == "still serving"
