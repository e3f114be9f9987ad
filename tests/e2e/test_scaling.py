"""Autoscaling settings the process runtime honours: min_containers, max_containers, max_inputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

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
