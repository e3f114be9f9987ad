"""GPU placement on an emulated inventory (`onshore server --gpus`), with the real client."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, run_modal, write_app

APP = """
import os
import time

import modal

app = modal.App("e2e-gpus")


@app.function(gpu="T4", scaledown_window=60)
def t4() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


@app.function(gpu="H100", scaledown_window=60)
def h100(seconds: float) -> tuple[str, float, float]:
    start = time.time()
    time.sleep(seconds)
    return os.environ.get("CUDA_VISIBLE_DEVICES", ""), start, time.time()


@app.function(gpu="H100:2")
def two() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


@app.function(gpu=["A100", "T4"])
def fallback() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


@app.function(gpu="A100-80GB")
def substituted() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


@app.function(gpu="any", scaledown_window=60)
def any_gpu() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


@app.function()
def cpu_only() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "unset")


@app.local_entrypoint()
def main() -> None:
    out = {
        "t4": t4.remote(),
        "two": two.remote(),
        "fallback": fallback.remote(),
        "substituted": substituted.remote(),
        "cpu_only": cpu_only.remote(),
        "h100": list(h100.map([1.5, 1.5, 1.5, 1.5])),
    }
    # T4's warm container holds the only T4 (its scaledown window is a minute): "any" takes the next free
    # GPU, and a T4 input that waits for the T4 makes any's idle container give it up.
    out["any"] = any_gpu.remote()
    print("RESULT " + __import__("json").dumps(out))
"""


@pytest.fixture
def gpu_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data", extra_args=["--gpus", "T4:1,H100:2"]).start()
    try:
        yield server
    finally:
        server.stop()


def _result(output: str) -> dict[str, object]:
    line = next(ln for ln in output.splitlines() if ln.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT ")))


def test_containers_get_whole_gpus_of_the_type_they_ask_for(
    gpu_server: ServerProcess, tmp_path: Path
) -> None:
    app = write_app(tmp_path, "gpus.py", APP)
    result = run_modal(gpu_server, "run", str(app), timeout=180)
    assert result.returncode == 0, result.output
    out = _result(result.output)
    assert out["t4"] == "0"  # the inventory: T4 is #0, the H100s #1 and #2
    assert sorted(str(out["two"]).split(",")) == ["1", "2"]
    assert out["fallback"] == "0"  # no A100 here: the exact T4 of the list comes before a substitute
    assert out["substituted"] in ("1", "2")  # no A100-80GB: the closest with at least 80 GB
    assert "asked for A100-80GB, which this server does not have: runs on H100" in gpu_server.log_text()
    assert out["cpu_only"] == "unset"
    runs = out["h100"]
    assert isinstance(runs, list) and len(runs) == 4
    for device, start, _ in runs:
        assert device in ("1", "2")
        running = [r for r in runs if r[1] <= start < r[2]]  # what runs as this one starts
        # Never more containers than H100s at once, and the ones running together hold different GPUs.
        assert len(running) <= 2
        assert len({r[0] for r in running}) == len(running)
    assert out["any"] in ("0", "1", "2")  # every GPU is held by an idle container: one makes way


def test_an_idle_gpu_container_makes_way_for_another_functions_input(
    gpu_server: ServerProcess, tmp_path: Path
) -> None:
    app = write_app(
        tmp_path,
        "gpu_turns.py",
        """
        import os

        import modal

        app = modal.App("e2e-gpu-turns")


        @app.function(gpu="T4", scaledown_window=600)
        def first() -> str:
            return "first:" + os.environ["CUDA_VISIBLE_DEVICES"]


        @app.function(gpu="T4", scaledown_window=600)
        def second() -> str:
            return "second:" + os.environ["CUDA_VISIBLE_DEVICES"]


        @app.local_entrypoint()
        def main() -> None:
            print("RESULT", first.remote(), second.remote(), first.remote())
        """,
    )
    result = run_modal(gpu_server, "run", str(app), timeout=120)
    assert result.returncode == 0, result.output
    assert "RESULT first:0 second:0 first:0" in result.output
    assert "its place is needed by" in gpu_server.log_text()


def test_a_request_the_server_can_never_place_fails_at_once(
    gpu_server: ServerProcess, tmp_path: Path
) -> None:
    app = write_app(
        tmp_path,
        "too_big.py",
        """
        import modal

        app = modal.App("e2e-gpu-too-big")


        @app.function(gpu="B200")
        def big() -> None:
            pass


        @app.function(cpu=4096.0)
        def many_cores() -> None:
            pass
        """,
    )
    result = run_modal(gpu_server, "deploy", str(app), timeout=60)
    assert result.returncode != 0
    assert "cannot run on this server" in result.output
    assert "1 x T4, 2 x H100 (emulated)" in result.output


def test_strict_mode_refuses_a_missing_type_and_status_shows_the_gpus(tmp_path: Path) -> None:
    strict = ["--gpus", "T4:1", "--gpu-fallback", "strict"]
    server = ServerProcess(tmp_path / "data", extra_args=strict).start()
    try:
        app = write_app(
            tmp_path,
            "strict.py",
            """
            import modal

            app = modal.App("e2e-gpu-strict")


            @app.function(gpu="L4")
            def l4() -> None:
                pass
            """,
        )
        result = run_modal(server, "deploy", str(app), timeout=60)
        assert result.returncode != 0
        assert "GPU L4" in result.output and "1 x T4 (emulated)" in result.output
        status = subprocess.run(
            [sys.executable, "-m", "onshore.cli.main", "status", "--data-dir", str(server.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert "GPUs: 1 of 1 free" in status.stdout
        assert "T4 (emulated)" in status.stdout and "CPU: 0 of" in status.stdout
    finally:
        server.stop()
