"""Container isolation on the process runtime via the real client: every container in its own namespaces,
files mounted at absolute paths, and `--isolation none` (plain subprocesses, what needs isolation refused)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ServerProcess, results, run_modal, write_app

PROBE_APP = """
import json
import os
import subprocess

import modal

app = modal.App("onshore-test-isolation")
image = (
    modal.Image.debian_slim()
    .add_local_dir(DATA_SRC, remote_path="/data")
    .add_local_file(CONF_SRC, remote_path="/etc/onshore-test/app.conf")
)


def _writable(path: str) -> bool:
    try:
        with open(path, "w") as fh:
            fh.write("x")
    except OSError:
        return False
    return True


@app.function()
def default_image(write: bool) -> dict:
    # Writes only where the test asked: without isolation they would land on the host.
    return {
        "pid": os.getpid(),
        "tmp_sees_host": os.path.exists(HOST_TMP_FILE),
        "tmp_writable": write and _writable("/tmp/onshore-isolation-probe"),
        "usr_writable": write and _writable("/usr/onshore-isolation-probe"),
        "sees_data_dir": os.path.exists(DATA_DIR),
        "cwd": os.getcwd(),
        "ps_pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    }


@app.function(image=image)
def mounted() -> dict:
    with open("/data/table.csv") as fh:
        table = fh.read()
    with open("/etc/onshore-test/app.conf") as fh:
        conf = fh.read()
    return {
        "table": table,
        "conf": conf,
        "nested": sorted(os.listdir("/data/nested")),
        "etc_still_there": os.path.exists("/etc/passwd"),
    }


@app.local_entrypoint()
def main(which: str, write: int = 0) -> None:
    try:
        value = default_image.remote(bool(write)) if which == "default" else mounted.remote()
    except Exception as exc:
        print("RESULT error", json.dumps(f"{type(exc).__name__}: {exc}"))
    else:
        print("RESULT value", json.dumps(value))
"""


def _app(tmp_path: Path, server: ServerProcess) -> Path:
    data = tmp_path / "data-src"
    (data / "nested").mkdir(parents=True)
    (data / "table.csv").write_text("a,b\n1,2\n")
    (data / "nested" / "one.txt").write_text("1")
    conf = tmp_path / "app.conf"
    conf.write_text("mode = test\n")
    host_tmp = tmp_path / "host-only"  # tmp_path lies in the host's /tmp
    host_tmp.write_text("the host's")
    source = (
        PROBE_APP.replace("DATA_SRC", repr(str(data)))
        .replace("CONF_SRC", repr(str(conf)))
        .replace("HOST_TMP_FILE", repr(str(host_tmp)))
        .replace("DATA_DIR", repr(str(server.data_dir)))
    )
    return write_app(tmp_path, "isolation_app.py", source)


def test_default_image_container_is_isolated(server: ServerProcess, tmp_path: Path) -> None:
    result = run_modal(server, "run", str(_app(tmp_path, server)), "--which", "default", "--write", "1")
    assert result.returncode == 0, result.output
    value = results(result)["value"]
    # A private /tmp: the host's files there are not visible, and what the container writes stays its own.
    assert value["tmp_sees_host"] is False, value
    assert value["tmp_writable"] is True, value
    assert not Path("/tmp/onshore-isolation-probe").exists()
    # The host's filesystem is read-only, and the server's data dir is hidden.
    assert value["usr_writable"] is False, value
    assert not Path("/usr/onshore-isolation-probe").exists()
    assert value["sees_data_dir"] is False, value
    assert value["cwd"] == "/root"
    # Its own pid namespace: it sees only its own few processes, not the host's.
    assert len(value["ps_pids"]) < 10 and value["pid"] in value["ps_pids"], value
    assert value["pid"] not in server.container_pids().values(), value


def test_files_mounted_at_absolute_paths(server: ServerProcess, tmp_path: Path) -> None:
    result = run_modal(server, "run", str(_app(tmp_path, server)), "--which", "mounted")
    assert result.returncode == 0, result.output
    assert "value" in results(result), result.output
    value = results(result)["value"]
    assert value == {
        "table": "a,b\n1,2\n",
        "conf": "mode = test\n",
        "nested": ["one.txt"],
        "etc_still_there": True,  # the mount adds to /etc, it does not hide it
    }, value


def test_isolation_none_runs_plain_subprocesses_and_refuses_what_needs_namespaces(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "srv", extra_args=["--isolation", "none"]).start()
    try:
        app = _app(tmp_path, server)
        plain = run_modal(server, "run", str(app), "--which", "default")
        assert plain.returncode == 0, plain.output
        value = results(plain)["value"]
        # A plain subprocess: it shares the host's /tmp and pid namespace.
        assert value["tmp_sees_host"] is True, value
        assert value["pid"] in server.container_pids().values()
        assert len(value["ps_pids"]) > 10, "it sees the host's processes"
        with_files = run_modal(server, "run", str(app), "--which", "mounted")
        assert with_files.returncode == 0, with_files.output
        error = results(with_files)["error"]
        assert "/data" in error and "needs Linux namespaces" in error, error
        assert "isolation is off" in error, error
    finally:
        server.stop()
