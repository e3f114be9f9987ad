"""Classes end to end: @app.cls lifecycle hooks, per-container state and modal.parameter containers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.conftest import REPO, ServerProcess, results, run_modal, run_python, write_app

APPS = REPO / "tests" / "e2e" / "apps"
LIFECYCLE = APPS / "classes_lifecycle.py"


def run_entrypoint(server: ServerProcess, entrypoint: str, *args: str) -> dict[str, Any]:
    result = run_modal(server, "run", f"{LIFECYCLE}::{entrypoint}", *args)
    assert result.returncode == 0, result.output
    return results(result)


def wait_for_file(path: Path, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return True
        time.sleep(0.2)
    return False


def test_enter_runs_once_and_calls_on_a_container_share_state(server: ServerProcess) -> None:
    out = run_entrypoint(server, "shared_state")
    first, second = out["first"], out["second"]
    # The same container served both calls...
    assert first["task"] and first["task"] == second["task"]
    assert first["pid"] == second["pid"]
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
    assert one_a["pid"] != two_a["pid"]
    # Each instance keeps going to its own container, whose state it alone advances.
    assert one_b["task"] == one_a["task"] and two_b["task"] == two_a["task"]
    assert (one_a["calls"], one_b["calls"], two_a["calls"], two_b["calls"]) == (1, 2, 1, 2)
    assert all(r["enter_runs"] == 1 for r in (one_a, one_b, two_a, two_b))


def test_exit_runs_when_the_app_stops(server: ServerProcess, tmp_path: Path) -> None:
    out = run_entrypoint(server, "exit_hook", "--marker-dir", str(tmp_path))
    assert out["info2"]["calls"] == 2
    # @exit had not run while the app was live (checked by the entrypoint after its calls)...
    assert out["marker_before_stop"] is False
    # ...and ran once the app stopped and its container was shut down gracefully.
    marker = tmp_path / "exit-n7.json"
    assert wait_for_file(marker), f"no @exit marker; server log tail: {server.log_text()[-2000:]}"
    assert json.loads(marker.read_text()) == {"n": 7, "calls": 2, "pid": out["info2"]["pid"]}


def test_exit_runs_when_an_idle_container_scales_down(server: ServerProcess, tmp_path: Path) -> None:
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    script = write_app(
        tmp_path,
        "scaledown.py",
        f"""
        import json
        import os
        import sys
        import time
        from pathlib import Path

        sys.path.insert(0, {str(APPS)!r})
        os.environ["E2E_CLASSES_SCALEDOWN_WINDOW"] = "2"
        import classes_lifecycle

        marker = Path({str(marker_dir)!r}) / "exit-n11.json"
        with classes_lifecycle.app.run():
            info = classes_lifecycle.Model(n=11, marker_dir={str(marker_dir)!r}).info.remote()
            print("PID", info["pid"])
            # The class has scaledown_window=2: the idle container stops while the app is still running.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (marker.exists() and marker.read_text()):
                time.sleep(0.2)
            print("MARKER_WHILE_RUNNING", marker.exists())
        """,
    )
    result = run_python(server, script)
    assert result.returncode == 0, result.output
    assert "MARKER_WHILE_RUNNING True" in result.stdout, result.output
    pid = int(next(li for li in result.stdout.splitlines() if li.startswith("PID ")).split()[1])
    assert json.loads((marker_dir / "exit-n11.json").read_text()) == {"n": 11, "calls": 1, "pid": pid}
