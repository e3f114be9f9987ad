"""A server restarted on a data dir with custom images starts cleanly: its spares start, no errors."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.conftest import ServerProcess, results, run_modal, write_app

APP = """
import json
import os

import modal

image = modal.Image.debian_slim().env({"RESTART_TEST": "custom"}).run_commands("echo built > /root/built.txt")
app = modal.App("onshore-test-restart-spares")


@app.function(image=image)
def custom() -> dict:
    return {"env": os.environ.get("RESTART_TEST"), "built": open("/root/built.txt").read().strip()}


@app.function()
def default() -> str:
    return os.environ.get("MODAL_TASK_ID", "")


@app.local_entrypoint()
def main() -> None:
    print("RESULT custom", json.dumps(custom.remote()))
    print("RESULT default", json.dumps(default.remote()))
"""

SPARE_ERRORS = re.compile(r"could not start a spare|Traceback|ERROR")


def test_restart_with_custom_images_is_quiet_and_uses_spares(tmp_path: Path) -> None:
    app = write_app(tmp_path, "restart_app.py", APP)
    server = ServerProcess(tmp_path / "data")
    try:
        server.start()
        first = run_modal(server, "run", str(app), timeout=300)
        assert first.returncode == 0, first.output
        expected = {"env": "custom", "built": "built"}
        assert results(first)["custom"] == expected, first.output
        server.stop()

        log_before = len(server.log_text())
        server.start()
        # The spares the restarted server starts (the default image's) are ready without an error.
        time.sleep(3.0)
        second = run_modal(server, "run", str(app), timeout=300)
        assert second.returncode == 0, second.output
        assert results(second)["custom"] == expected, second.output
        task_id = results(second)["default"]
        restarted = server.log_text()[log_before:]
        # Neither start met a spare that could not start (its sandbox binds the API socket, made first).
        assert not SPARE_ERRORS.search(server.log_text()), server.log_text()
        # The default image's container was one of the spares started with the server.
        assert f"container {task_id} starts from a spare" in restarted, restarted
    finally:
        server.stop()
