"""Classes end to end: @app.cls lifecycle hooks, per-container state and modal.parameter containers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.conftest import REPO, ServerProcess, results, run_modal, run_python, wait_for, write_app

APPS = REPO / "tests" / "e2e" / "apps"
LIFECYCLE = APPS / "classes_lifecycle.py"
APP_ID = re.compile(r"ap-[A-Za-z0-9]{22}")


def run_entrypoint(server: ServerProcess, entrypoint: str, *args: str) -> dict[str, Any]:
    result = run_modal(server, "run", f"{LIFECYCLE}::{entrypoint}", *args)
    assert result.returncode == 0, result.output
    return results(result)


def wait_for_exit_report(server: ServerProcess, app_id: str, timeout: float = 20.0) -> Any:
    """The report an @exit hook printed (`EXIT-MARKER <json>`), found in the app's logs."""

    def report() -> Any:
        logs = run_modal(server, "app", "logs", app_id, timeout=30).stdout
        found = [line.split("EXIT-MARKER ", 1)[1] for line in logs.splitlines() if "EXIT-MARKER " in line]
        return json.loads(found[0]) if found else None

    return wait_for(report, timeout, 0.5)


def test_enter_runs_once_and_calls_on_a_container_share_state(server: ServerProcess) -> None:
    out = run_entrypoint(server, "shared_state")
    first, second = out["first"], out["second"]
    # The same container served both calls...
    assert first["task"] and first["task"] == second["task"]
    # ...its instance state carried over from one call to the next, and @enter ran only once.
    assert (first["calls"], second["calls"]) == (1, 2)
    assert first["enter_runs"] == second["enter_runs"] == 1
    # Parameters were already set when @enter ran.
    assert first["loaded_n"] == first["n"] == 3
    assert out["times"] == 15
    assert out["times_map"] == [3, 6, 9]


def test_each_parameter_set_gets_its_own_container(server: ServerProcess) -> None:
    out = run_entrypoint(server, "parameters")
    one_a, two_a, one_b, two_b = out["one_a"], out["two_a"], out["one_b"], out["two_b"]
    assert (one_a["n"], one_b["n"], two_a["n"], two_b["n"]) == (1, 1, 2, 2)
    assert one_a["task"] != two_a["task"]
    assert server.container_pid(one_a["task"]) != server.container_pid(two_a["task"])
    # Each instance keeps going to its own container, whose state it alone advances.
    assert one_b["task"] == one_a["task"] and two_b["task"] == two_a["task"]
    assert (one_a["calls"], one_b["calls"], two_a["calls"], two_b["calls"]) == (1, 2, 1, 2)
    assert all(r["enter_runs"] == 1 for r in (one_a, one_b, two_a, two_b))


def test_exit_runs_when_the_app_stops(server: ServerProcess) -> None:
    result = run_modal(server, "run", f"{LIFECYCLE}::exit_hook")
    assert result.returncode == 0, result.output
    out = results(result)
    assert out["info2"]["calls"] == 2
    # @exit had not run while the app was live: its line did not stream before the entrypoint's last one...
    assert "EXIT-MARKER" not in result.stdout.split("RESULT calls_done")[0], result.output
    # ...and it ran once the app stopped and its container was shut down gracefully.
    app_id = APP_ID.search(result.output)
    assert app_id, result.output
    report = wait_for_exit_report(server, app_id.group(0))
    assert report == {"n": 7, "calls": 2, "task": out["info2"]["task"]}, server.log_text()[-2000:]


def test_exit_runs_when_an_idle_container_scales_down(server: ServerProcess, tmp_path: Path) -> None:
    script = write_app(
        tmp_path,
        "scaledown.py",
        f"""
        import os
        import subprocess
        import sys
        import time

        sys.path.insert(0, {str(APPS)!r})
        os.environ["E2E_CLASSES_SCALEDOWN_WINDOW"] = "2"
        import classes_lifecycle

        with classes_lifecycle.app.run():
            info = classes_lifecycle.Model(n=11, report_exit=1).info.remote()
            app_id = classes_lifecycle.app.app_id
            print("TASK", info["task"], app_id)
            # The class has scaledown_window=2: the idle container stops while the app is still running.
            deadline = time.monotonic() + 20
            logs = ""
            while time.monotonic() < deadline and "EXIT-MARKER" not in logs:
                time.sleep(0.5)
                argv = [sys.executable, "-m", "modal", "app", "logs", app_id]
                logs = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
            print("MARKER_WHILE_RUNNING", "EXIT-MARKER" in logs)
        """,
    )
    result = run_python(server, script)
    assert result.returncode == 0, result.output
    assert "MARKER_WHILE_RUNNING True" in result.stdout, result.output
    _, task, app_id = next(li for li in result.stdout.splitlines() if li.startswith("TASK ")).split()
    assert wait_for_exit_report(server, app_id) == {"n": 11, "calls": 1, "task": task}
