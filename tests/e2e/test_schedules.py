"""Schedules with the real client: a deployed Period and a Cron in a time zone run on time, `modal app info`
and `onshore status` show them, they go on after a server restart and end with `modal app stop`; a bad
schedule is refused at deploy time; `modal run` of a scheduled app runs its schedule while the app runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.conftest import ServerProcess, clean_env, run_modal, run_python, write_app
from tests.e2e.test_web import http_url

APP_NAME = "e2e-schedules"
ZONE = "Asia/Kathmandu"  # UTC+5:45: a cron minute and hour there are neither UTC's nor the host's

# Waits, in the client, until a Dict holds `count` keys starting with `prefix` (or `timeout` passed), then
# prints them: each scheduled run writes one key, named after the time it ran.
READER = """
import json, sys, time
import modal

name, prefix, count, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
runs = modal.Dict.from_name(name, create_if_missing=True)
deadline = time.monotonic() + timeout
while True:
    keys = sorted(k for k in runs.keys() if k.startswith(prefix))
    if len(keys) >= count or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print("RUNS " + json.dumps(keys))
"""


def _app_source(dict_name: str, cron: str) -> str:
    return f"""
    import time

    import modal

    app = modal.App({APP_NAME!r})
    runs = modal.Dict.from_name({dict_name!r}, create_if_missing=True)


    @app.function(schedule=modal.Period(seconds=1))
    def tick() -> None:
        runs[f"tick {{time.time():.3f}}"] = 1


    @app.function(schedule=modal.Cron({cron!r}, timezone={ZONE!r}))
    def local_time() -> None:
        runs[f"cron {{time.time():.3f}}"] = 1
    """


def _runs(
    server: ServerProcess, reader: Path, dict_name: str, prefix: str, count: int, timeout: float
) -> list[float]:
    """The times of the runs the Dict records, once there are `count` (fewer if `timeout` passed first)."""
    result = run_python(server, reader, dict_name, prefix, str(count), str(timeout), timeout=timeout + 60)
    assert result.returncode == 0, f"{result.output}\n--- server log ---\n{server.log_text()[-3000:]}"
    line = next(line for line in result.stdout.splitlines() if line.startswith("RUNS "))
    return [float(key.split()[1]) for key in json.loads(line[5:])]


def _status(server: ServerProcess) -> str:
    env = clean_env()
    env["ONSHORE_HOME"] = str(server.data_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "onshore.cli.main", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _app_page(server: ServerProcess, app_id: str) -> str:
    """The app's page, signed in with the server's token."""
    base = http_url(server)
    with httpx.Client(base_url=base, timeout=30) as web:
        login = web.post("/login", data=server.token, follow_redirects=False)
        assert login.status_code == 303, login.text
        page = web.get(f"/apps/{app_id}")
        assert page.status_code == 200, page.text
        return page.text


def _cron_for_next_minute(lead: float) -> tuple[str, float]:
    """A cron string that fires once a day, at the first whole minute `lead` seconds from now in ZONE, and
    that minute as a UNIX time."""
    at = (datetime.now(ZoneInfo(ZONE)) + timedelta(seconds=lead + 60)).replace(second=0, microsecond=0)
    return f"{at.minute} {at.hour} * * *", at.timestamp()


def test_deployed_schedules_run_survive_a_restart_and_stop_with_the_app(
    fresh_server: ServerProcess, tmp_path: Path
) -> None:
    started: list[ServerProcess] = []
    try:
        server = fresh_server.start()
        dict_name = f"e2e-schedule-runs-{int(time.time())}"
        cron, cron_at = _cron_for_next_minute(lead=60)  # room for a slow deploy on a busy machine
        app = write_app(tmp_path, "scheduled.py", _app_source(dict_name, cron))
        reader = write_app(tmp_path, "reader.py", READER)
        deployed = run_modal(server, "deploy", str(app))
        assert deployed.returncode == 0, deployed.output
        deployed_at = time.time()

        # `modal app info` prints each function's schedule, as the client formats AppGetInfo's summaries.
        info = run_modal(server, "app", "info", APP_NAME)
        assert info.returncode == 0, info.output
        assert "Every 1 second" in info.stdout and f"{cron} ({ZONE})" in info.stdout, info.stdout
        summaries = json.loads(run_modal(server, "app", "info", APP_NAME, "--json").stdout)["functions"]
        assert summaries["tick"]["summary"]["schedule"] == {"period": {"seconds": 1.0}}
        assert summaries["local_time"]["summary"]["schedule"] == {
            "cron": {"cron_string": cron, "timezone": ZONE}
        }
        # `onshore status` shows when each runs next.
        status = _status(server)
        assert re.search(
            rf"{APP_NAME}\s+local_time\s+{re.escape(cron)} \({ZONE}\)\s+\S+ \S+ \(in ", status
        ), status
        assert re.search(rf"{APP_NAME}\s+tick\s+Every 1 second\s+", status), status
        app_id = re.findall(r"/apps/(ap-\w+)", deployed.output)[-1]
        page = _app_page(server, app_id)
        assert "schedule: Every 1 second" in page and "next run: " in page, page

        # The period runs, once a second.
        ticks = _runs(server, reader, dict_name, "tick", 4, 60)
        assert len(ticks) >= 4, ticks
        assert "last run: " in _app_page(server, app_id)
        assert ticks[0] >= deployed_at - 5  # not before the deployment (the client's clock is this host's)
        gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
        assert max(gaps[1:] or gaps) < 5, ticks  # the first run waited for a container; then about 1 s apart

        # The cron runs at its minute in its time zone: once, and not before.
        (ran,) = _runs(server, reader, dict_name, "cron", 1, cron_at - time.time() + 60)
        assert cron_at <= ran < cron_at + 30, (ran, cron_at)

        # A restart: the schedule is back and goes on, once for the downtime (the rule is unit-tested).
        before = len(_runs(server, reader, dict_name, "tick", 0, 0))
        server.stop()
        time.sleep(3)
        server = ServerProcess(fresh_server.data_dir).start()
        started.append(server)
        assert "restored 2 schedules" in server.log_text(), server.log_text()[-3000:]
        after = _runs(server, reader, dict_name, "tick", before + 3, 60)
        assert len(after) >= before + 3, (before, after)

        # `modal app stop`: no more runs (one already started may still finish), no schedule in status.
        stopped = run_modal(server, "app", "stop", APP_NAME, "--yes")
        assert stopped.returncode == 0, stopped.output
        time.sleep(2)
        settled = len(_runs(server, reader, dict_name, "tick", 0, 0))
        time.sleep(4)
        assert len(_runs(server, reader, dict_name, "tick", 0, 0)) == settled
        assert "Schedules:" not in _status(server)
    finally:
        for proc in started:
            proc.stop()


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ('modal.Cron("61 * * * *")', r"Invalid cron string '61 \* \* \* \*': Bad minute"),
        ('modal.Cron("0 9 * * *", timezone="Mars/Olympus_Mons")', r"Unknown timezone 'Mars/Olympus_Mons'"),
        ("modal.Period()", r"Invalid Period: every unit is zero"),
    ],
)
def test_a_bad_schedule_is_refused_at_deploy_time(
    server: ServerProcess, tmp_path: Path, schedule: str, message: str
) -> None:
    app = write_app(
        tmp_path,
        "bad_schedule.py",
        f"""
        import modal

        app = modal.App("e2e-bad-schedule")


        @app.function(schedule={schedule})
        def job() -> None:
            pass
        """,
    )
    result = run_modal(server, "deploy", str(app))
    assert result.returncode != 0, result.output
    assert re.search(message, result.output), result.output
    assert "Function 'job' has a bad schedule" in result.output, result.output
    assert "Traceback" not in result.output and "INTERNAL" not in result.output, result.output
    assert "Onshore server error" not in server.log_text()[-5000:]


def test_modal_run_runs_the_schedule_while_the_app_runs(server: ServerProcess, tmp_path: Path) -> None:
    dict_name = f"e2e-schedule-ephemeral-{int(time.time())}"
    app = write_app(
        tmp_path,
        "ephemeral.py",
        f"""
        import time

        import modal

        app = modal.App("e2e-schedule-ephemeral")
        runs = modal.Dict.from_name({dict_name!r}, create_if_missing=True)


        @app.function(schedule=modal.Period(seconds=1))
        def tick() -> None:
            runs[f"tick {{time.time():.3f}}"] = 1


        @app.local_entrypoint()
        def main() -> None:
            deadline = time.monotonic() + 60
            while runs.len() < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            print("RUNS", runs.len())
        """,
    )
    result = run_modal(server, "run", str(app))
    assert result.returncode == 0, result.output
    match = re.search(r"^RUNS (\d+)$", result.stdout, re.MULTILINE)
    assert match and int(match[1]) >= 2, result.output
