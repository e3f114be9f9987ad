"""The process runtime via the real client: warm reuse, scaledown, crashes, retries, timeouts, refusals."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, results, run_modal, run_python, wait_for, write_app

APPS = Path(__file__).resolve().parent / "apps"


def _line(output: str, prefix: str) -> str:
    """The rest of the first output line starting with prefix (fails the test when there is none)."""
    for line in output.splitlines():
        if line.startswith(prefix + " "):
            return line[len(prefix) + 1 :].strip()
    raise AssertionError(f"no line starting with {prefix!r} in output:\n{output}")


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _descendants(root: int) -> set[int]:
    """Live processes below root in the process tree (containers a server started, and their children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _sleepers(root: int) -> set[int]:
    """The `sleep 300` processes below root (what the busy container started)."""
    found = set()
    for pid in _descendants(root):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"300"]:
                found.add(pid)
    return found


def test_warm_container_is_reused_then_scaled_down(server: ServerProcess) -> None:
    result = run_modal(server, "run", str(APPS / "runtime_warm.py"))
    assert result.returncode == 0, result.output
    first, second = _line(result.output, "TASKS").split()
    # Two sequential calls land on the same warm container.
    assert first == second, result.output
    assert _line(result.output, "RUNNING_AFTER_CALLS") == "True", result.output
    # With scaledown_window=2 the idle container stops while the app is still running: not at once, but
    # within a few seconds (window + autoscaler tick + stop grace).
    elapsed, gone = _line(result.output, "GONE_AFTER").split()
    assert gone == "True", f"container {first} still listed after 15s idle:\n{result.output}"
    assert 0.5 <= float(elapsed) <= 10.0, result.output
    assert wait_for(lambda: not _alive(server.container_pid(first)), 5.0), "its process outlived it"
    # The next call needs (and gets) a fresh container.
    assert _line(result.output, "NEW_TASK") != first, result.output


@pytest.mark.parametrize(
    ("which", "how"),
    [("exit", "exited with code 1"), ("kill", "killed by SIGKILL"), ("segv", "killed by SIGSEGV")],
)
def test_dead_container_fails_its_input(server: ServerProcess, which: str, how: str) -> None:
    result = run_modal(server, "run", str(APPS / "runtime_crash.py"), "--which", which)
    assert result.returncode == 0, result.output
    error = _line(result.output, "ERROR")
    # The caller gets an error (not a hang), and its text says the container died and how.
    assert "Container" in error and how in error, error
    assert "while running this input" in error, error


def test_crashed_input_is_retried(server: ServerProcess) -> None:
    result = run_modal(server, "run", str(APPS / "runtime_crash.py"), "--which", "once")
    assert result.returncode == 0, result.output
    assert _line(result.output, "RESULT") == "succeeded after a crash", result.output
    # Two attempts, each in a container of its own (the first one died).
    attempts = [line.split()[1] for line in result.output.splitlines() if line.startswith("ATTEMPT ")]
    assert len(attempts) == 2 and attempts[0] != attempts[1], result.output


def test_timeout_raises_function_timeout_error(server: ServerProcess) -> None:
    result = run_modal(server, "run", str(APPS / "runtime_timeout.py"))
    assert result.returncode == 0, result.output
    error = _line(result.output, "ERROR")
    assert error.startswith("modal.exception.FunctionTimeoutError:"), error
    # The caller hears about it at the timeout, not when the 10 s sleep would have ended.
    assert float(_line(result.output, "ELAPSED")) < 8.0, result.output
    # The container running the timed-out input does not keep running it.
    pid = server.container_pid(_line(result.output, "STARTED"))
    assert wait_for(lambda: not _alive(pid), 10.0), f"container {pid} still running after its input timed out"


@pytest.mark.parametrize(
    ("app_file", "feature"),
    [
        ("runtime_refuse_registry.py", re.compile(r"Base image .mambaorg/micromamba", re.IGNORECASE)),
        ("runtime_refuse_nfs.py", re.compile(r"network file system", re.IGNORECASE)),
    ],
)
def test_unbuilt_features_are_refused(server: ServerProcess, app_file: str, feature: re.Pattern[str]) -> None:
    result = run_modal(server, "run", str(APPS / app_file))
    assert result.returncode != 0, result.output
    assert "RESULT" not in result.output
    assert "Traceback" not in result.output, result.output
    error = result.output[result.output.find("Error") :]
    assert "Error" in result.output and feature.search(error), result.output
    refused = "not" in error and ("support" in error or "implement" in error or "built" in error)
    assert refused or "cannot be used by the process runtime" in error, error


def test_a_gpu_function_on_a_server_without_gpus_fails_at_once_saying_so(server: ServerProcess) -> None:
    result = run_modal(server, "run", str(APPS / "runtime_no_gpus.py"))
    assert result.returncode != 0, result.output
    assert "RESULT" not in result.output and "Traceback" not in result.output, result.output
    assert "Function 'f' cannot run on this server: it asks for" in result.output, result.output
    assert "GPU ANY per container" in result.output and "no GPUs (" in result.output, result.output


def _kill_leftovers(pids: set[int]) -> list[int]:
    """Kill (and return) those of these processes that are still alive, so a failing test leaks nothing."""
    left = [p for p in sorted(pids) if _alive(p)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def test_sigterm_stops_every_container(fresh_server: ServerProcess, tmp_path: Path) -> None:
    fresh_server.start()
    assert fresh_server.proc is not None
    server_pid = fresh_server.proc.pid
    started: set[int] = set()
    try:
        deployed = run_modal(fresh_server, "deploy", str(APPS / "runtime_sigterm.py"))
        assert deployed.returncode == 0, deployed.output
        script = write_app(
            tmp_path,
            "drive.py",
            """
            import modal

            idle = modal.Function.from_name("onshore-test-runtime-sigterm", "idle_task")
            busy = modal.Function.from_name("onshore-test-runtime-sigterm", "busy")
            print("IDLE", idle.remote())
            busy.spawn()
            """,
        )
        driven = run_python(fresh_server, script)
        assert driven.returncode == 0, driven.output
        idle_pid = fresh_server.container_pid(_line(driven.output, "IDLE"))
        # The busy container has started its child (`sleep 300`), somewhere below the server.
        assert wait_for(lambda: _sleepers(server_pid), 30.0), fresh_server.log_text()
        pids = fresh_server.container_pids()
        assert len(pids) == 2, pids
        started = _descendants(server_pid)
        assert set(pids.values()) | _sleepers(server_pid) <= started, (started, pids)
        assert idle_pid in started

        assert fresh_server.stop() is not None
        # Every process the server started (containers, what they started, spares kept warm) is gone once
        # the server has exited: nothing is left orphaned.
        wait_for(lambda: not any(map(_alive, started)), 5.0)
        left = _kill_leftovers(started)
        assert not left, f"processes left running after the server stopped: {left}\n{fresh_server.log_text()}"
        assert not (fresh_server.data_dir / "server.json").exists()
    finally:
        if fresh_server.proc is not None and fresh_server.proc.poll() is None:
            started |= _descendants(server_pid)
        fresh_server.stop()
        _kill_leftovers(started)


def test_idle_containers_make_way_when_the_machine_is_full(tmp_path: Path) -> None:
    """With one container slot, an idle container of one function is stopped so another function can run."""
    server = ServerProcess(tmp_path / "data", extra_args=["--max-containers", "1"]).start()
    try:
        app = write_app(
            tmp_path,
            "full_machine.py",
            """
            import modal

            app = modal.App("e2e-runtime-full-machine")

            @app.function(scaledown_window=60)
            def first() -> str:
                return "first"

            @app.function(scaledown_window=60)
            def second() -> str:
                return "second"

            @app.local_entrypoint()
            def main() -> None:
                print("RESULT", first.remote(), second.remote(), first.remote())
            """,
        )
        result = run_modal(server, "run", str(app), timeout=60)
        assert result.returncode == 0, result.output
        assert "RESULT first second first" in result.output
        assert "its place is needed by" in server.log_text()
    finally:
        server.stop()


def test_output_written_in_pieces_is_one_log_entry(server: ServerProcess) -> None:
    result = run_modal(server, "run", str(APPS / "runtime_pieces.py"), timeout=120)
    assert result.returncode == 0, result.output
    assert results(result)["tail"] == "one line in pieces", result.output
