"""Processes killed with SIGKILL mid-work: containers during a map with retries, the server during spawns.

Every input's result must still arrive, exactly once, and nothing is lost across a server restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, Result, ServerProcess, results, run_modal, run_python, wait_for, write_app

MAP_APP = REPO / "tests" / "e2e" / "apps" / "faults_map.py"
STATE_APP = REPO / "tests" / "e2e" / "apps" / "state_app.py"
STATE_APP_NAME = "onshore-test-state"


def test_killed_containers_lose_no_map_input(fresh_server: ServerProcess) -> None:
    server = fresh_server.start()
    n = 500
    client = subprocess.Popen(
        [sys.executable, "-m", "modal", "run", str(MAP_APP), "--n", str(n)],
        env=server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    killed: set[str] = set()
    try:
        # Kill each container the map has started, one at a time, until four have died mid-map.
        deadline = time.monotonic() + 90
        while len(killed) < 4 and client.poll() is None and time.monotonic() < deadline:
            live = {t: p for t, p in server.container_pids().items() if t not in killed}
            if not live:
                time.sleep(0.1)
                continue
            task_id, pid = sorted(live.items())[0]
            time.sleep(0.4)  # let it take inputs first
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            killed.add(task_id)
        output, _ = client.communicate(timeout=180)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 0, output[-5000:]
    rows = results(Result(client.returncode, output, ""))["rows"]
    # Every input's result arrived once, in order, and is the right one.
    assert [r[0] for r in rows] == list(range(n))
    assert all(r[1] == r[0] * r[0] for r in rows)
    log = server.log_text()
    assert len(killed) == 4, f"only {len(killed)} containers were killed\n{log[-3000:]}"
    assert log.count("killed by SIGKILL") >= 4, log[-3000:]
    assert "retrying input" in log  # inputs in flight on a killed container ran again
    assert {r[2] for r in rows} - killed, "containers started after the kills finished the map"


def test_server_killed_during_spawned_calls_loses_none(fresh_server: ServerProcess, tmp_path: Path) -> None:
    server = fresh_server.start()
    deployed = run_modal(server, "deploy", str(STATE_APP))
    assert deployed.returncode == 0, deployed.output
    # Half the calls finish before the kill; the slow ones are running or queued when the server dies (an
    # attempt started before slow_until waits, a later one finishes at once).
    count = 20
    slow_until = time.time() + 4.0
    spawn = write_app(
        tmp_path,
        "spawn.py",
        f"""
        import modal

        square = modal.Function.from_name({STATE_APP_NAME!r}, "square")
        slow = modal.Function.from_name({STATE_APP_NAME!r}, "slow_first_time")
        for i in range({count}):
            call = square.spawn(i) if i % 2 == 0 else slow.spawn({slow_until!r})
            print("ID", i, call.object_id, flush=True)
        """,
    )
    out = run_python(server, spawn)
    assert out.returncode == 0, out.output
    calls = {
        int(line.split()[1]): line.split()[2] for line in out.stdout.splitlines() if line.startswith("ID ")
    }
    assert len(calls) == count
    assert wait_for(lambda: "started container" in server.log_text(), 30)
    time.sleep(max(0.0, slow_until - time.time()) + 0.2)
    # SIGKILL: no shutdown hook runs; what was written to the data dir is all the next server has.
    server.stop(signal.SIGKILL)
    restarted = ServerProcess(server.data_dir).start()
    try:
        fetch = write_app(
            tmp_path,
            "fetch.py",
            f"""
            import modal

            for i, call_id in {calls!r}.items():
                print("VALUE", i, modal.FunctionCall.from_id(call_id).get(timeout=90), flush=True)
            """,
        )
        got = run_python(restarted, fetch, timeout=240)
        assert got.returncode == 0, got.output + restarted.log_text()[-3000:]
        values = {
            int(line.split()[1]): line.split(" ", 2)[2]
            for line in got.stdout.splitlines()
            if line.startswith("VALUE ")
        }
        assert sorted(values) == list(range(count))
        for i, value in values.items():
            if i % 2 == 0:
                assert value == str(i * i)
            else:
                assert value.startswith("finished a later attempt in ta-"), value
        assert "Traceback" not in restarted.log_text()
    finally:
        restarted.stop()
