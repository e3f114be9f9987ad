"""Test-only: a private dockerd (Debian's docker.io) with its own data root, exec root, socket and cgroups."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import docker
import docker.errors

DOCKERD = Path("/usr/sbin/dockerd")
CACHE = Path(os.environ.get("ONSHORE_TEST_CACHE") or Path.home() / ".cache" / "onshore-tests")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Flags that make dockerd self-contained on a shared machine: no iptables rules, no bridge, no sysctl
# changes, no system config file; its containers' cgroups live under a parent of its own.
ISOLATION_FLAGS = [
    "--iptables=false",
    "--ip6tables=false",
    "--ip-masq=false",
    "--ip-forward=false",
    "--bridge=none",
    "--userland-proxy=false",
]
# Tried in order; ONSHORE_TEST_DOCKER_STORAGE_DRIVER names one to use alone.
STORAGE_DRIVERS = ["overlay2", "vfs"]


class DockerdUnavailable(Exception):
    """dockerd cannot run here; the message says precisely why (tests skip with it)."""


@dataclass
class Dockerd:
    """A running private dockerd. `url` is what DockerEngine(base_url=...) takes."""

    run_dir: Path  # exec root, socket, pid file, log: removed at stop
    data_root: Path  # images and containers: kept when it is the cache
    storage_driver: str
    cgroup_parent: str
    proc: subprocess.Popen[bytes]
    keep_data_root: bool
    lock: IO[str] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.run_dir / "dockerd.log"

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def unavailable_reason() -> str | None:
    """Why no private dockerd can start on this machine, or None."""
    if os.geteuid() != 0:
        return f"a private dockerd needs root; these tests run as uid {os.geteuid()}"
    if not DOCKERD.exists():
        return f"no {DOCKERD}: install Debian's docker.io (bash .ci/setup-docker.sh)"
    if not (CGROUP_ROOT / "memory").is_dir() and not (CGROUP_ROOT / "cgroup.controllers").exists():
        return f"no memory cgroup under {CGROUP_ROOT}: dockerd cannot limit containers"
    return None


def start_dockerd(timeout: float = 60.0) -> Dockerd:
    """Start a private dockerd; its data root is the shared cache unless another session holds it."""
    reason = unavailable_reason()
    if reason:
        raise DockerdUnavailable(reason)
    run_dir = Path(tempfile.mkdtemp(prefix="onsd-", dir="/tmp"))  # short: containerd's socket paths
    CACHE.mkdir(parents=True, exist_ok=True)
    lock: IO[str] | None = (CACHE / "docker.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # type: ignore[arg-type]
        data_root, keep = CACHE / "docker" / "data-root", True
    except BlockingIOError:
        assert lock is not None
        lock.close()
        lock = None
        data_root, keep = run_dir / "data-root", False
    data_root.mkdir(parents=True, exist_ok=True)
    failures = []
    forced = os.environ.get("ONSHORE_TEST_DOCKER_STORAGE_DRIVER")
    for driver in [forced] if forced else STORAGE_DRIVERS:
        daemon = _launch(run_dir, data_root, driver, keep, lock, timeout)
        if isinstance(daemon, Dockerd):
            return daemon
        failures.append(f"--storage-driver={driver}: {daemon}")
    if lock is not None:
        lock.close()
    _remove_tree(run_dir)
    raise DockerdUnavailable("dockerd did not start:\n" + "\n".join(failures))


def _launch(
    run_dir: Path, data_root: Path, driver: str, keep: bool, lock: IO[str] | None, timeout: float
) -> Dockerd | str:
    (run_dir / "daemon.json").write_text("{}")
    cgroup_parent = f"/onshore-test-dockerd-{os.getpid()}"
    argv = [
        str(DOCKERD),
        f"--config-file={run_dir / 'daemon.json'}",
        f"--data-root={data_root}",
        f"--exec-root={run_dir / 'exec'}",
        f"--pidfile={run_dir / 'dockerd.pid'}",
        f"--host=unix://{run_dir / 'docker.sock'}",
        f"--storage-driver={driver}",
        f"--cgroup-parent={cgroup_parent}",
        *ISOLATION_FLAGS,
    ]
    with (run_dir / "dockerd.log").open("ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    daemon = Dockerd(run_dir, data_root, driver, cgroup_parent, proc, keep, lock)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            why = daemon.log_tail(5)
            _release(daemon, final=False)
            return f"exited with {proc.returncode}: {why}"
        if daemon.socket.exists():
            try:
                with docker.APIClient(base_url=daemon.url, version="auto", timeout=5) as api:
                    api.ping()
                return daemon
            except docker.errors.DockerException:
                pass
        time.sleep(0.2)
    why = daemon.log_tail(5)
    _terminate(proc)
    _release(daemon, final=False)
    return f"did not answer within {timeout:.0f}s: {why}"


def remove_everything_but(daemon: Dockerd, keep_images: set[str]) -> None:
    """Remove every container of this private daemon, and every image not tagged with one of keep_images."""
    with docker.APIClient(base_url=daemon.url, version="auto", timeout=60) as api:
        for c in api.containers(all=True):
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_container(c["Id"], force=True, v=True)
        for image in api.images(all=False):
            tags = set(image.get("RepoTags") or []) - {"<none>:<none>"}
            if tags & keep_images:
                continue
            for ref in tags or {image["Id"]}:
                with contextlib.suppress(docker.errors.APIError):
                    api.remove_image(ref, force=True)


def stop_dockerd(daemon: Dockerd) -> None:
    """Stop the daemon by its pid, then remove its mounts, cgroups and directories (the cached data root
    stays). Raises if something of it could not be cleaned."""
    _terminate(daemon.proc)
    _release(daemon, final=True)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _release(daemon: Dockerd, *, final: bool) -> None:
    """Clean up after an exited daemon; `final` also removes its directories and drops the cache lock."""
    problems: list[str] = []
    # Anything left running from the daemon's containerd (shims) names our exec root on its command line.
    for pid in _pids_mentioning(str(daemon.run_dir)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for root in (daemon.run_dir, daemon.data_root):
        problems += unmount_under(root)
    problems += _remove_cgroups(daemon.cgroup_parent)
    if not final:
        if problems:
            raise RuntimeError("private dockerd left things behind: " + "; ".join(problems))
        return
    if not daemon.keep_data_root and not problems:
        _remove_tree(daemon.data_root)
    if not problems:
        _remove_tree(daemon.run_dir)
    if daemon.lock is not None:
        daemon.lock.close()
        daemon.lock = None
    if problems:
        raise RuntimeError("private dockerd left things behind: " + "; ".join(problems))


def _pids_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        raw = line.split(" ")[4]
        points.append(raw.encode().decode("unicode_escape"))  # \040 and friends
    return points


def unmount_under(root: Path) -> list[str]:
    """Unmount everything mounted at or below root (deepest first); returns what stayed mounted."""
    prefix = str(root.resolve()) if root.exists() else str(root)
    inside = [p for p in _mount_points() if p == prefix or p.startswith(prefix + "/")]
    for point in sorted(set(inside), key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
    left = [p for p in _mount_points() if p == prefix or p.startswith(prefix + "/")]
    return [f"still mounted: {p}" for p in left]


def _remove_cgroups(parent: str) -> list[str]:
    problems = []
    if not CGROUP_ROOT.is_dir():
        return problems
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / parent.lstrip("/")
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
            try:
                os.rmdir(dirpath)
            except OSError as e:
                problems.append(f"cgroup {dirpath}: {e.strerror}")
    return problems


def _remove_tree(path: Path) -> None:
    if path.exists():
        if unmount_under(path):
            raise RuntimeError(f"refusing to remove {path}: something is still mounted below it")
        shutil.rmtree(path)


def dockerd_version() -> str:
    out = subprocess.run([str(DOCKERD), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()
