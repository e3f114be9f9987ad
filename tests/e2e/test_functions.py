"""Functions end to end: the real client's call styles, generators, async, errors and blob-sized payloads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, ServerProcess, results, run_modal, run_python, wait_for, write_app

APPS = REPO / "tests" / "e2e" / "apps"
BASIC = APPS / "functions_basic.py"
SPAWN = APPS / "functions_spawn.py"
SPAWN_APP = "e2e-functions-spawn"


def run_entrypoint(
    server: ServerProcess, entrypoint: str, *args: str, timeout: float = 120.0
) -> dict[str, Any]:
    result = run_modal(server, "run", f"{BASIC}::{entrypoint}", *args, timeout=timeout)
    assert result.returncode == 0, result.output
    return results(result)


def big_files(root: Path, min_bytes: int) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and p.stat().st_size >= min_bytes}


def test_remote_runs_in_a_container_and_local_runs_here(server: ServerProcess) -> None:
    out = run_entrypoint(server, "remote_local")
    assert out["square_remote"] == 49
    assert out["square_local"] == 25
    assert out["where_remote"]["remote"] is True
    assert out["where_remote"]["pid"] != out["local_pid"]
    # .local() runs the function body in the calling process, not in a container.
    assert out["where_local"] == {"remote": False, "pid": out["local_pid"]}


def test_map_keeps_input_order_and_starmap_spreads_tuples(server: ServerProcess) -> None:
    out = run_entrypoint(server, "mapping")
    ordered = out["map_ordered"]
    assert [r["square"] for r in ordered] == [x * x for x in range(6)]
    # The inputs really finished last-to-first, so the order above is the client reordering outputs...
    done = [r["done_at"] for r in ordered]
    assert done == sorted(done, reverse=True), done
    # ...and without ordering they arrive as they finish.
    assert sorted(out["map_unordered"]) == [x * x for x in range(6)]
    assert out["map_unordered"] != [x * x for x in range(6)]
    assert out["map_two_iterables"] == [11, 22, 33]
    assert out["starmap"] == [3, 7, 11]


def test_for_each_runs_every_input(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex[:8]
    result = run_modal(server, "run", f"{BASIC}::for_each", "--tag", tag)
    assert result.returncode == 0, result.output
    assert results(result)["for_each_done"] is True
    for x in range(4):
        assert f"for_each {tag} saw {x}" in result.output, result.output


def test_spawn_then_get(server: ServerProcess) -> None:
    out = run_entrypoint(server, "spawning")
    assert out["call_id"].startswith("fc-")
    assert out["spawn_get"] == 144
    assert out["from_id_get"] == 144


def test_spawned_call_outlives_the_spawning_process(server: ServerProcess, tmp_path: Path) -> None:
    deployed = run_modal(server, "deploy", str(SPAWN))
    assert deployed.returncode == 0, deployed.output
    try:
        spawner = write_app(
            tmp_path,
            "spawner.py",
            f"""
            import time
            import modal

            fn = modal.Function.from_name({SPAWN_APP!r}, "slow_cube")
            call = fn.spawn(5, delay=4.0)
            print("CALL_ID", call.object_id)
            print("EXITING_AT", time.time())
            """,
        )
        fetcher = write_app(
            tmp_path,
            "fetcher.py",
            """
            import json
            import sys
            import modal

            print("RESULT", json.dumps(modal.FunctionCall.from_id(sys.argv[1]).get(timeout=90)))
            """,
        )
        spawned = run_python(server, spawner)
        assert spawned.returncode == 0, spawned.output
        fields = dict(line.split(" ", 1) for line in spawned.stdout.splitlines() if " " in line)
        call_id, exited_at = fields["CALL_ID"].strip(), float(fields["EXITING_AT"])
        assert call_id.startswith("fc-")

        fetched = run_python(server, fetcher, call_id)
        assert fetched.returncode == 0, fetched.output
        line = next(li for li in fetched.stdout.splitlines() if li.startswith("RESULT "))
        value = json.loads(line.split(" ", 1)[1])
        assert value["cube"] == 125
        # The call was still running after the process that spawned it had gone.
        assert value["done_at"] > exited_at
    finally:
        run_modal(server, "app", "stop", "--yes", SPAWN_APP)


def test_generator_streams_with_remote_gen(server: ServerProcess) -> None:
    out = run_entrypoint(server, "generators")
    assert out["remote_gen"] == [4, 3, 2, 1]


def test_async_functions_and_aio_variants(server: ServerProcess) -> None:
    out = run_entrypoint(server, "async_variants")
    assert out["async_remote_aio"] == 42
    assert out["sync_fn_remote_aio"] == 81
    assert out["map_aio"] == [0, 2, 4, 6, 8]
    assert out["starmap_aio"] == [2, 4]
    assert out["spawn_aio_get"] == 64
    assert out["remote_gen_aio"] == [3, 2, 1]
    assert out["async_fn_local"] == 10


def test_map_return_exceptions_puts_failures_in_the_results(server: ServerProcess) -> None:
    out = run_entrypoint(server, "return_exceptions")
    assert out["return_exceptions"] == [
        {"value": 0},
        {"type": "ValueError", "msg": "odd input 1 rejected"},
        {"value": 2},
        {"type": "ValueError", "msg": "odd input 3 rejected"},
        {"value": 4},
    ]


def test_remote_exception_is_reraised_with_type_message_and_remote_traceback(
    server: ServerProcess, tmp_path: Path
) -> None:
    lines = BASIC.read_text().splitlines()
    raise_line = next(n for n, text in enumerate(lines, 1) if 'raise KeyError(f"remote-boom' in text)
    # No enable_output(): the container's own logs stay hidden, so any remote frame printed here
    # came back with the result, not through the log stream.
    script = write_app(
        tmp_path,
        "catch_remote_error.py",
        f"""
        import sys
        import traceback

        sys.path.insert(0, {str(APPS)!r})
        import functions_basic

        with functions_basic.app.run():
            try:
                functions_basic.explode.remote(42)
            except KeyError as exc:
                print("TYPE", type(exc).__name__)
                print("ARGS", repr(exc.args))
                print("".join(traceback.format_exception(exc)))
            else:
                print("NO EXCEPTION")
        """,
    )
    caught = run_python(server, script)
    assert caught.returncode == 0, caught.output
    assert "TYPE KeyError" in caught.stdout, caught.output
    assert "ARGS ('remote-boom-42',)" in caught.stdout, caught.output
    # The traceback holds the remote frame: the function's file, the raising line and the function's name.
    assert f'functions_basic.py", line {raise_line}, in explode' in caught.stdout, caught.output
    # ...and not the client's own container frames, which the client strips as it does on Modal.
    assert "_container_entrypoint.py" not in caught.stdout, caught.output

    # Uncaught under `modal run`, the command fails and shows the error.
    result = run_modal(server, "run", f"{BASIC}::remote_error")
    assert result.returncode != 0
    assert "KeyError: 'remote-boom-42'" in result.output, result.output


def test_payloads_over_2mib_go_through_blobs(server: ServerProcess) -> None:
    size = 5 * 1024 * 1024
    before = big_files(server.data_dir, size)
    out = run_entrypoint(server, "big_payload", "--size", str(size))
    assert out["big_len"] == size
    assert out["big_ok"] is True
    # Both the argument and the result were stored as blobs, not sent inline.
    assert len(big_files(server.data_dir, size) - before) >= 2


@pytest.mark.slow
def test_one_gigabyte_round_trip(fresh_server: ServerProcess) -> None:
    server = fresh_server.start()
    size = 10**9
    try:
        started = time.monotonic()
        out = run_entrypoint(server, "big_payload", "--size", str(size), timeout=900)
        overall = time.monotonic() - started
        print(f"1 GB round trip: {out['big_seconds']}s in the call, {overall:.1f}s overall")
        assert out["big_len"] == size
        assert out["big_ok"] is True
    finally:
        # Two 1 GB blobs stay on disk otherwise, in pytest's retained temp folders.
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


CANCEL_APP = """
import json
import os
import time

import modal

app = modal.App("onshore-test-cancel")


@app.function()
def slow() -> str:
    try:
        time.sleep(120)
    finally:
        print(f"CANCELLED-IN-CONTAINER {time.time()}", flush=True)
    return "finished"


@app.local_entrypoint()
def main() -> None:
    call = slow.spawn()
    time.sleep(3)  # it runs (a container started for it)
    started = time.monotonic()
    # Into a file of the test's: the container's log lines share stdout with this process's prints.
    with open(os.environ["CANCEL_RESULT"], "w") as f:
        json.dump(time.time(), f)
    call.cancel()
    while True:
        try:
            call.get(timeout=0.5)
        except modal.exception.InputCancellation:
            break
        except TimeoutError:
            pass
        except Exception as exc:  # the client's error for a cancelled call
            print("RESULT error", json.dumps(type(exc).__name__))
            break
    print("RESULT cancel_s", json.dumps(time.monotonic() - started))
    time.sleep(6)
"""


def test_a_cancelled_call_stops_in_its_container_promptly(server: ServerProcess, tmp_path: Path) -> None:
    """The container hears of the cancellation on its held heartbeat, not at its next one (15 s later)."""
    app = write_app(tmp_path, "cancel_app.py", CANCEL_APP)
    started = time.monotonic()
    cancelled = tmp_path / "cancelled_at.json"
    result = run_modal(server, "run", str(app), timeout=120, env=server.env(CANCEL_RESULT=str(cancelled)))
    assert result.returncode == 0, result.output
    line = next(x for x in result.output.splitlines() if "CANCELLED-IN-CONTAINER" in x)
    stopped_at = float(line.split("CANCELLED-IN-CONTAINER", 1)[1].split()[0])
    assert stopped_at - json.loads(cancelled.read_text()) < 3.0, result.output
    assert time.monotonic() - started < 40, result.output


def test_ctrl_c_of_modal_run_stops_the_running_input_and_its_container(
    fresh_server: ServerProcess, tmp_path: Path
) -> None:
    server = fresh_server.start()
    app = write_app(
        tmp_path,
        "interrupted.py",
        """
        import time

        import modal

        app = modal.App("e2e-ctrl-c")


        @app.function()
        def slow() -> str:
            time.sleep(120)
            return "finished"


        @app.local_entrypoint()
        def main() -> None:
            print("RESULT", slow.remote())
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "modal", "run", str(app)],
        env=server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        found = server.wait_new_container(set(), timeout=60)
        assert found is not None, server.log_text()[-2000:]
        _, pid = found
        time.sleep(2)  # it runs its input
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=30)
        assert "RESULT" not in out
        stopped = time.monotonic()
        assert wait_for(lambda: not _alive(pid), 15.0), "the container kept running after Ctrl-C"
        assert time.monotonic() - stopped < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
