"""The background server of a data dir: find it, start it detached, and stop it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from onshore.config import DataDir, default_data_dir

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
LOG_ROTATE_BYTES = 10 * 1024 * 1024


class CliError(Exception):
    """A failure the command line reports as one message and a non-zero exit."""


def resolve_data_dir(arg: str | None) -> DataDir:
    """`--data-dir`, else $ONSHORE_HOME, else the platform default; always absolute."""
    root = Path(arg).expanduser() if arg else default_data_dir()
    return DataDir(root.absolute())


def log_path(data: DataDir) -> Path:
    return data.root / "server.log"


@dataclass
class RunningServer:
    url: str
    pid: int
    http_url: str = ""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie waiting to be reaped."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():
        return not Path("/proc/self").exists()  # no procfs: trust kill(0)
    # A process is gone once every thread is a zombie (the leader alone can be one while others still run).
    try:
        threads = [_state(task / "stat") for task in (proc / "task").iterdir()]
    except OSError:
        threads = [_state(proc / "stat")]
    return any(state not in ("Z", "X", "") for state in threads)


def _state(stat_file: Path) -> str:
    try:
        return stat_file.read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return ""


def accepts_connections(url: str, timeout: float = 1.0) -> bool:
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        return False
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            return True
    except OSError:
        return False


def find_running(data: DataDir) -> RunningServer | None:
    """The server named by the data dir's server.json, if its pid is alive and its URL accepts connections."""
    info = data.read_json(data.server_file)
    if not info:
        return None
    try:
        pid, url = int(info["pid"]), str(info["url"])
    except (KeyError, TypeError, ValueError):
        return None
    if not pid_alive(pid) or not accepts_connections(url):
        return None
    return RunningServer(url=url, pid=pid, http_url=str(info.get("http_url", "")))


@contextlib.contextmanager
def _start_lock(data: DataDir) -> Iterator[None]:
    """Serialises check-then-start, so two commands started together share one server."""
    with open(data.root / "server.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_log(data: DataDir) -> int:
    path = log_path(data)
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    os.write(fd, f"--- onshore server started in the background at {stamp} ---\n".encode())
    return fd


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _spawn(data: DataDir) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "onshore.cli.main", "server", "--data-dir", str(data.root), "--port", "0"]
    log_fd = _open_log(data)
    try:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            cwd=data.root,
            env=env,
            start_new_session=True,  # detached from the terminal: no SIGINT/SIGHUP from it
            close_fds=True,
        )
    finally:
        os.close(log_fd)


def ensure_server(data: DataDir, timeout: float = READY_TIMEOUT) -> tuple[RunningServer, bool]:
    """The data dir's running server, started in the background first if none runs; (server, started)."""
    data.ensure()
    with _start_lock(data):
        running = find_running(data)
        if running is not None:
            return running, False
        proc = _spawn(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise CliError(
                    f"The Onshore server exited during start-up (exit code {proc.returncode}); "
                    f"the end of {log_path(data)}:\n{_tail(log_path(data))}"
                )
            info = data.read_json(data.server_file)
            if info and info.get("pid") == proc.pid and accepts_connections(str(info.get("url", ""))):
                return RunningServer(str(info["url"]), proc.pid, str(info.get("http_url", ""))), True
            time.sleep(0.1)
        _terminate(proc.pid)
        raise CliError(
            f"The Onshore server did not become ready in {timeout:.0f}s; "
            f"the end of {log_path(data)}:\n{_tail(log_path(data))}"
        )


def _children(pid: int) -> list[int]:
    """Direct children of pid (Linux /proc); the process runtime's containers are these."""
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def _terminate(pid: int, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM, then SIGKILL after timeout (and its containers' process groups with it); True if forced."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return False
    children = _children(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for child in children:
        # Containers run in process groups of their own, led by the container process.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child, signal.SIGKILL)
    _wait_gone(pid, 5.0)
    return True


def cmd_stop(data: DataDir) -> int:
    running = find_running(data)
    if running is None:
        print(f"No Onshore server is running for {data.root}; nothing to stop.")
        return 0
    print(f"Stopping the Onshore server at {running.url} (pid {running.pid})...", flush=True)
    forced = _terminate(running.pid)
    if forced:
        with contextlib.suppress(OSError):
            data.server_file.unlink()
        print(f"The server did not exit within {STOP_TIMEOUT:.0f}s of SIGTERM: killed it (SIGKILL).")
    else:
        print("Onshore server stopped.")
    return 0
