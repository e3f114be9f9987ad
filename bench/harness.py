"""Benchmark plumbing: an `onshore server` subprocess per benchmark, client-script runs, and statistics."""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CLIENTS = BENCH_DIR / "clients"
RESULT_PREFIX = "BENCH_RESULT "


def log(message: str) -> None:
    """Progress goes to stderr: stdout carries only the JSON report."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def onshore_executable() -> str:
    """The `onshore` script next to this interpreter (the project's .venv), else the one on PATH."""
    candidate = Path(sys.executable).parent / "onshore"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("onshore")
    if found is None:
        raise RuntimeError("no `onshore` executable: run with the project's .venv/bin/python")
    return found


def clean_env() -> dict[str, str]:
    """This process's environment without MODAL_* settings, so a client talks only to our server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------- process bookkeeping (Linux /proc)


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing parenthesis.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of `root`: pid -> start time (to tell a reused pid from the original)."""
    parents: dict[int, int] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                parents[int(entry)], starts[int(entry)] = stat
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = starts[pid]
                frontier.append(pid)
    return found


def kill_if_same(pid: int, start: int) -> bool:
    """SIGKILL `pid` only if it is still the process that started at `start`; True if it was killed."""
    stat = _proc_stat(pid)
    if stat is None or stat[1] != start:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
        return True
    return False


# ---------------------------------------------------------------- the server under test


@dataclass
class BenchServer:
    """One `onshore server --port 0` in a fresh data dir; stop() ends it and anything it left running."""

    workdir: Path
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    startup_s: float = 0.0
    leftovers_killed: int = 0
    _seen: dict[int, int] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def start(self, timeout: float = 60.0) -> BenchServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [
                    onshore_executable(),
                    "server",
                    "--data-dir",
                    str(self.data_dir),
                    "--port",
                    "0",
                    *self.extra_args,
                ],
                stdout=subprocess.PIPE,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
                text=True,
                env=clean_env(),
                cwd=self.workdir,
            )
        lines: queue.Queue[str | None] = queue.Queue()

        def drain(stream: Any) -> None:  # keeps the server's stdout pipe from ever filling up
            for line in stream:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is not None and "ready at" in line:
                self.url = line.strip().rsplit(" ", 1)[1]
                break
            if line is None:
                self.stop()
                raise RuntimeError(f"server did not become ready; log tail:\n{self.log_tail()}")
        self.startup_s = time.perf_counter() - t0
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def token(self) -> dict[str, str]:
        data: dict[str, str] = json.loads((self.data_dir / "token.json").read_text())
        return data

    def client_env(self) -> dict[str, str]:
        env = clean_env()
        token = self.token()
        env.update(
            MODAL_SERVER_URL=self.url,
            MODAL_TOKEN_ID=token["token_id"],
            MODAL_TOKEN_SECRET=token["token_secret"],
        )
        return env

    def note_children(self) -> None:
        """Remember the server's current descendants so stop() can end any it leaves behind."""
        if self.proc is not None and self.proc.poll() is None:
            self._seen.update(descendants(self.proc.pid))

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def log_counts(self) -> dict[str, int]:
        text = self.log_tail(chars=10**9)
        return {
            "errors": text.count(" ERROR "),
            "warnings": text.count(" WARNING "),
            "tracebacks": text.count("Traceback (most recent call last)"),
        }

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        self.note_children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"server pid {self.proc.pid} ignored SIGTERM for {timeout}s: killing it")
                self.proc.kill()
                self.proc.wait(5)
        # A stopped server should have stopped its containers; end (by pid) any it did not.
        self.leftovers_killed += sum(kill_if_same(pid, start) for pid, start in self._seen.items())
        if self.leftovers_killed:
            log(f"killed {self.leftovers_killed} process(es) the server left behind")
        self._seen.clear()


@contextlib.contextmanager
def bench_server(name: str, extra_args: Sequence[str] = ()) -> Iterator[BenchServer]:
    """A fresh server in a temporary directory, stopped (and the directory removed) on the way out."""
    workdir = Path(tempfile.mkdtemp(prefix=f"onshore-bench-{name}-"))
    server = BenchServer(workdir, list(extra_args))
    try:
        server.start()
        log(f"{name}: server pid {server.pid} ready at {server.url} in {server.startup_s * 1000:.0f} ms")
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- client scripts


class ClientError(RuntimeError):
    pass


def run_client(server: BenchServer, script: str, *args: object, timeout: float = 600.0) -> dict[str, Any]:
    """Run bench/clients/<script> against the server in its own working dir; return its result object."""
    cwd = server.workdir / f"client-{Path(script).stem}"
    cwd.mkdir(exist_ok=True)
    env = server.client_env()
    env["BENCH_SERVER_PID"] = str(server.pid)
    stop_watch = threading.Event()

    def watch() -> None:  # sample the server's descendants so stop() knows every container's pid
        while not stop_watch.wait(0.5):
            server.note_children()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        proc = subprocess.run(
            [sys.executable, str(CLIENTS / script), *map(str, args)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise ClientError(
            f"{script} timed out after {timeout:.0f}s; stderr tail: {_tail(exc.stderr)}"
        ) from exc
    finally:
        stop_watch.set()
        watcher.join()
    results = [
        line[len(RESULT_PREFIX) :] for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)
    ]
    if proc.returncode != 0 or not results:
        raise ClientError(
            f"{script} exited {proc.returncode}; stderr tail:\n{_tail(proc.stderr)}\n"
            f"server log tail:\n{server.log_tail(1500)}"
        )
    result: dict[str, Any] = json.loads(results[-1])
    return result


def _tail(text: str | bytes | None, chars: int = 2000) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text[-chars:]


# ---------------------------------------------------------------- statistics and baselines


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_ms(seconds: Sequence[float], percentiles: Sequence[int] = (50, 90, 99)) -> dict[str, float]:
    """Count, min/mean/max and percentiles, in milliseconds, of durations given in seconds."""
    ms = [s * 1000.0 for s in seconds]
    out: dict[str, float] = {"n": len(ms)}
    for q in percentiles:
        out[f"p{q}_ms"] = round(percentile(ms, q), 3)
    out["mean_ms"] = round(statistics.fmean(ms), 3) if ms else math.nan
    out["min_ms"] = round(min(ms), 3) if ms else math.nan
    out["max_ms"] = round(max(ms), 3) if ms else math.nan
    return out


def time_python(code: str, samples: int) -> dict[str, float]:
    """Wall time of `python -c CODE` in fresh interpreters (this venv): the floor of a container's start."""
    durations = []
    for _ in range(samples):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=clean_env(), stdin=subprocess.DEVNULL)
        durations.append(time.perf_counter() - t0)
    return summarize_ms(durations, percentiles=(50,))
