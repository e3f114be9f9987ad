"""Autoscaling settings the process runtime honours (min/max containers, max_inputs), and core pinning."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, run_modal, write_app


def _tasks(server: ServerProcess, app_name: str) -> int:
    """The number of containers `modal app list` shows for a deployed app (-1: not listed)."""
    listed = run_modal(server, "app", "list", "--json")
    assert listed.returncode == 0, listed.output
    rows = [r for r in json.loads(listed.stdout) if r["description"] == app_name and r["state"] == "deployed"]
    return int(rows[0]["tasks"]) if rows else -1


def test_min_containers_keeps_a_container_warm_without_calls(server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(
        tmp_path,
        "warm_pool.py",
        """
        import modal

        app = modal.App("e2e-scaling-min-containers")

        @app.function(min_containers=1)
        def ping() -> str:
            return "pong"
        """,
    )
    deployed = run_modal(server, "deploy", str(app))
    assert deployed.returncode == 0, deployed.output
    try:
        deadline = time.monotonic() + 20
        while _tasks(server, "e2e-scaling-min-containers") < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _tasks(server, "e2e-scaling-min-containers") == 1
    finally:
        run_modal(server, "app", "stop", "e2e-scaling-min-containers", "--yes")


def test_max_containers_and_max_inputs(server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(
        tmp_path,
        "limits.py",
        """
        import os
        import time

        import modal

        app = modal.App("e2e-scaling-limits")

        @app.function(max_containers=1, scaledown_window=30)
        def one_at_a_time(i: int) -> str:
            time.sleep(0.2)
            return os.environ["MODAL_TASK_ID"]

        @app.function(max_inputs=1)
        def fresh_each_time(i: int) -> str:
            return os.environ["MODAL_TASK_ID"]

        @app.local_entrypoint()
        def main() -> None:
            tasks = set(one_at_a_time.map(range(6)))
            print("ONE_AT_A_TIME", len(tasks))
            fresh = [fresh_each_time.remote(i) for i in range(3)]
            print("FRESH", len(set(fresh)))
        """,
    )
    result = run_modal(server, "run", str(app))
    assert result.returncode == 0, result.output
    # max_containers=1: six inputs that each take a while still share one container.
    assert "ONE_AT_A_TIME 1" in result.output
    # max_inputs=1: every call gets a new container.
    assert "FRESH 3" in result.output


def _cores(listed: str) -> list[int]:
    """A Cpus_allowed_list value ("1", "0-1", "0,2-3") as core numbers."""
    cores: list[int] = []
    for part in listed.split(","):
        low, _, high = part.partition("-")
        cores.extend(range(int(low), int(high or low) + 1))
    return cores


@pytest.mark.skipif(
    sys.platform != "linux" or len(os.sched_getaffinity(0)) < 2, reason="core pinning needs Linux, 2+ cores"
)
def test_a_container_runs_on_one_core_until_it_needs_more(server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(
        tmp_path,
        "pinning.py",
        """
        import subprocess
        import sys
        import time

        import modal

        app = modal.App("e2e-scaling-pinning")

        def allowed() -> str:
            with open("/proc/self/status") as f:
                return next(line.split()[1] for line in f if line.startswith("Cpus_allowed_list"))

        @app.function(scaledown_window=30)
        def probe(burn: float) -> str:
            # Two busy child processes want two cores: the one the container is pinned to is not enough.
            loop = f"import time\\nend = time.time() + {burn}\\nwhile time.time() < end: pass"
            children = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(2 if burn else 0)]
            for child in children:
                child.wait()
            return allowed()

        @app.local_entrypoint()
        def main() -> None:
            print("BEFORE", probe.remote(0))
            print("BUSY", probe.remote(4.0))
            print("AFTER", probe.remote(0))
        """,
    )
    result = run_modal(server, "run", str(app))
    assert result.returncode == 0, result.output
    seen = dict(line.split() for line in result.stdout.splitlines() if line.startswith(("BEFORE", "AFTER")))
    every = sorted(os.sched_getaffinity(0))
    assert len(_cores(seen["BEFORE"])) == 1 and _cores(seen["BEFORE"])[0] in every
    assert _cores(seen["AFTER"]) == every


def test_buffer_containers_are_kept_warm_while_the_function_is_busy(
    server: ServerProcess, tmp_path: Path
) -> None:
    app = write_app(
        tmp_path,
        "buffered.py",
        """
        import time

        import modal

        app = modal.App("e2e-scaling-buffer")

        @app.function(buffer_containers=2, scaledown_window=2)
        def work(seconds: float) -> str:
            time.sleep(seconds)
            return "done"
        """,
    )
    deployed = run_modal(server, "deploy", str(app))
    assert deployed.returncode == 0, deployed.output
    caller = write_app(
        tmp_path,
        "call_buffered.py",
        """
        import modal

        call = modal.Function.from_name("e2e-scaling-buffer", "work").spawn(12.0)
        print("SPAWNED", call.object_id, flush=True)
        print("RESULT", call.get())
        """,
    )
    try:
        assert _tasks(server, "e2e-scaling-buffer") == 0  # no demand: no buffer either
        proc = subprocess.Popen(
            [sys.executable, str(caller)], env=server.env(), stdout=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 11  # while the call runs (12 s)
            while _tasks(server, "e2e-scaling-buffer") < 3 and time.monotonic() < deadline:
                time.sleep(0.3)
            assert _tasks(server, "e2e-scaling-buffer") == 3  # one busy, two kept ready beside it
            out, _ = proc.communicate(timeout=60)
            assert "RESULT done" in out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        deadline = time.monotonic() + 20
        while _tasks(server, "e2e-scaling-buffer") > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _tasks(server, "e2e-scaling-buffer") == 0  # idle again: all go after the window
    finally:
        run_modal(server, "app", "stop", "e2e-scaling-buffer", "--yes")


def test_ten_new_functions_called_in_turn_all_start_from_spare_processes(
    fresh_server: ServerProcess, tmp_path: Path
) -> None:
    server = fresh_server.start()
    source = "import modal\n\napp = modal.App('e2e-scaling-ten-functions')\n"
    for i in range(10):
        source += f"\n\n@app.function(scaledown_window=2)\ndef f{i}() -> int:\n    return {i}\n"
    source += (
        "\n\n@app.local_entrypoint()\ndef main() -> None:\n"
        "    print('RESULT', [f.remote() for f in (f0, f1, f2, f3, f4, f5, f6, f7, f8, f9)])\n"
    )
    app = tmp_path / "ten_functions.py"
    app.write_text(source)
    result = run_modal(server, "run", str(app), timeout=120)
    assert result.returncode == 0, result.output
    assert "RESULT [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]" in result.output
    log = server.log_text()
    started = [m for m in re.findall(r"started container (ta-\w+)", log)]
    assert len(started) == 10
    spared = [t for t in started if f"container {t} starts from a spare" in log]
    assert spared == started  # the spares kept up: none of the ten needed a full start
