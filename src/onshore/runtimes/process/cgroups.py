"""Hard memory and CPU limits for containers with Linux cgroups (v1 or v2), under one parent per server.

Layout: `<the server's own cgroup>/onshore/<server name>/<container name>` in each hierarchy used (v1:
the memory and the cpu hierarchies; v2: the unified one). Nesting under the server's own cgroup keeps the
server's own limits above its containers. A process joins a container's cgroup by writing its pid to the
`procs_files` (Cgroup.add, Cgroup.join as a preexec_fn, or SandboxSpec.cgroup_procs for the sandbox's
init); everything it starts stays in it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Version = Literal["v1", "v2"]
CPU_PERIOD_US = 100_000
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class CgroupError(Exception):
    """Cgroups cannot do what was asked here; the message names what is missing."""


@dataclass(frozen=True)
class CgroupSupport:
    version: Literal["v1", "v2", "none"]
    reason: str = ""  # why "none", or what is missing (e.g. a controller)
    controllers: tuple[str, ...] = ()  # of "memory" and "cpu", those that can be limited

    @property
    def available(self) -> bool:
        return self.version != "none"


@dataclass(frozen=True)
class _Hierarchy:
    mount: Path
    controllers: frozenset[str]  # v1: the controllers mounted there; v2: those the parent can enable
    parent: Path  # this process's own cgroup in it


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def _own_paths() -> dict[str, str]:
    """This process's cgroup per hierarchy: {"memory": "/a/b", "cpu": ..., "": v2 path}."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _hierarchies() -> dict[str, _Hierarchy]:
    """{"memory": v1, "cpu": v1, "v2": unified} for those mounted here."""
    own = _own_paths()
    found: dict[str, _Hierarchy] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        root, mount, fstype, options = fields[3], _unescape(fields[4]), fields[sep + 1], fields[sep + 3]
        names = set(options.split(","))
        keys = ["v2"] if fstype == "cgroup2" else [c for c in ("memory", "cpu") if c in names]
        if fstype not in ("cgroup", "cgroup2") or not keys:
            continue
        for key in keys:
            path = own.get("" if key == "v2" else key)
            if path is None or key in found:
                continue
            if root != "/" and path.startswith(root):
                path = path[len(root) :] or "/"
            parent = Path(mount) / path.lstrip("/")
            if key == "v2":
                try:
                    names = set((parent / "cgroup.controllers").read_text().split())
                except OSError:
                    names = set()
            found[key] = _Hierarchy(Path(mount), frozenset(names & {"memory", "cpu"}), parent)
    return found


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise CgroupError(f"cannot write {value!r} to {path}: {e.strerror}") from None


def _pids(procs: Path) -> list[int]:
    try:
        return [int(p) for p in procs.read_text().split()]
    except OSError:
        return []


def _v2_blocker(parent: Path, controllers: frozenset[str]) -> str:
    """Why controllers cannot be enabled below this v2 cgroup, or "" if they can."""
    with contextlib.suppress(OSError):
        if controllers <= set((parent / "cgroup.subtree_control").read_text().split()):
            return ""
    if not (parent / "cgroup.type").exists():
        return ""  # the real root cgroup: the no-internal-processes rule does not apply
    others = [p for p in _pids(parent / "cgroup.procs") if p != os.getpid()]
    if not others:
        return ""  # only this process: it moves into a leaf of its own first (Cgroups does that)
    return (
        f"cgroup v2: {parent} holds other processes ({', '.join(map(str, others[:5]))}), so no controller "
        "can be enabled below it (cgroup v2's no-internal-processes rule); start Onshore alone in a "
        "delegated cgroup (e.g. systemd Delegate=yes) or from the root cgroup"
    )


class Cgroups:
    """This server's cgroups: `onshore/<name>` below its own cgroup; create() makes one per container."""

    def __init__(self, name: str | None = None, version: Version | None = None) -> None:
        support = self.probe(version)
        if not support.available:
            raise CgroupError(support.reason)
        self.name = name or f"server-{os.getpid()}"
        if not _NAME.match(self.name):
            raise CgroupError(f"bad cgroup name {self.name!r}")
        self.version: Version = "v2" if support.version == "v2" else "v1"
        self.support = support
        found = _hierarchies()
        if self.version == "v2":
            self._parents = {c: found["v2"].parent for c in ("memory", "cpu")}
        else:
            self._parents = {c: found[c].parent for c in ("memory", "cpu") if c in found}
        self._bases = {c: p / "onshore" / self.name for c, p in self._parents.items()}
        self._made = False
        self._open: dict[str, Cgroup] = {}

    @staticmethod
    def probe(version: Version | None = None) -> CgroupSupport:
        """Whether cgroups can limit containers here, with which version; with `version`, only that one."""
        if sys.platform != "linux":
            return CgroupSupport("none", f"cgroups need Linux; this is {sys.platform}")
        try:
            found = _hierarchies()
        except OSError as e:
            return CgroupSupport("none", f"cannot read this process's cgroups: {e}")
        reasons = []
        v2 = found.get("v2")
        if v2 is not None and version in (None, "v2"):
            missing = sorted({"memory", "cpu"} - v2.controllers)
            blocker = _v2_blocker(v2.parent, v2.controllers)
            if not os.access(v2.parent, os.W_OK):
                reasons.append(f"cgroup v2: {v2.parent} is not writable (not root, and not delegated)")
            elif blocker:
                reasons.append(blocker)
            elif version == "v2" or not missing:
                note = f"controllers not available in cgroup v2 here: {', '.join(missing)}" if missing else ""
                return CgroupSupport("v2", note, tuple(sorted(v2.controllers)))
            else:
                reasons.append(f"cgroup v2 at {v2.mount} lacks the {', '.join(missing)} controllers")
        if version in (None, "v1"):
            v1 = [found[c] for c in ("memory", "cpu") if c in found]
            unwritable = [str(h.parent) for h in v1 if not os.access(h.parent, os.W_OK)]
            if not v1:
                reasons.append("cgroup v1: no memory or cpu hierarchy is mounted")
            elif unwritable:
                reasons.append(f"cgroup v1: {', '.join(unwritable)} not writable (not root, not delegated)")
            else:
                controllers = tuple(c for c in ("cpu", "memory") if c in found)
                missing = sorted({"memory", "cpu"} - set(controllers))
                note = f"cgroup v1 hierarchies not mounted: {', '.join(missing)}" if missing else ""
                return CgroupSupport("v1", note, controllers)
        if version == "v2" and v2 is None:
            reasons.append("no cgroup v2 hierarchy is mounted")
        return CgroupSupport("none", "; ".join(reasons) or "no cgroup hierarchy found")

    def _make_bases(self) -> None:
        if self._made:
            return
        if self.version == "v2":
            parent = self._parents["memory"]
            wanted = " ".join(f"+{c}" for c in self.support.controllers)
            if wanted and not set(self.support.controllers) <= set(
                (parent / "cgroup.subtree_control").read_text().split()
            ):
                if (parent / "cgroup.type").exists() and os.getpid() in _pids(parent / "cgroup.procs"):
                    # No internal processes in v2: this server moves into a leaf of its own first.
                    leaf = parent / "onshore-server"
                    leaf.mkdir(exist_ok=True)
                    _write(leaf / "cgroup.procs", str(os.getpid()))
                _write(parent / "cgroup.subtree_control", wanted)
            for directory in (parent / "onshore", self._bases["memory"]):
                directory.mkdir(exist_ok=True)
                if wanted:
                    _write(directory / "cgroup.subtree_control", wanted)
        else:
            for base in self._bases.values():
                base.mkdir(parents=True, exist_ok=True)
        self._made = True

    def create(self, name: str, memory_limit_bytes: int | None, cpu_limit: float | None) -> Cgroup:
        """A new, empty cgroup with these limits (None: no limit); cpu_limit is in cores (0.5, 2, ...)."""
        if not _NAME.match(name):
            raise CgroupError(f"bad cgroup name {name!r}")
        if name in self._open:
            raise CgroupError(f"cgroup {name} exists already")
        for controller, wanted in (("memory", memory_limit_bytes), ("cpu", cpu_limit)):
            if wanted is not None and controller not in self.support.controllers:
                raise CgroupError(
                    f"cannot limit {controller}: no {controller} controller in cgroup {self.version} here"
                )
        self._make_bases()
        group = Cgroup(name, self.version, {c: base / name for c, base in self._bases.items()})
        try:
            for directory in group.unique_dirs:
                directory.mkdir()
            group._limit(memory_limit_bytes, cpu_limit)
        except BaseException:
            group.close()
            raise
        self._open[name] = group
        group._on_close = lambda: self._open.pop(name, None)
        return group

    def close(self) -> None:
        """Close every cgroup made here and remove this server's dirs (and `onshore` if it is empty)."""
        for group in list(self._open.values()):
            group.close()
        for base in set(self._bases.values()):
            for directory in (base, base.parent):
                with contextlib.suppress(OSError):
                    directory.rmdir()
        self._made = False


@dataclass
class Cgroup:
    name: str
    version: Version
    dirs: dict[str, Path]  # controller ("memory", "cpu") -> its dir (the same dir for both in v2)
    _on_close: Callable[[], object] | None = field(default=None, repr=False)

    @property
    def unique_dirs(self) -> list[Path]:
        return sorted(set(self.dirs.values()))

    @property
    def procs_files(self) -> list[Path]:
        """Write a pid into each of these to put that process (and what it starts later) in the cgroup."""
        return [d / "cgroup.procs" for d in self.unique_dirs]

    def add(self, pid: int) -> None:
        for procs in self.procs_files:
            _write(procs, str(pid))

    def join(self) -> None:
        """Put the calling process in the cgroup: usable as a subprocess preexec_fn."""
        self.add(os.getpid())

    def pids(self) -> list[int]:
        return sorted({pid for procs in self.procs_files for pid in _pids(procs)})

    def _file(self, controller: str, name: str) -> Path | None:
        directory = self.dirs.get(controller)
        if directory is None or not (directory / name).exists():
            return None
        return directory / name

    def _limit(self, memory: int | None, cpu: float | None) -> None:
        if memory is not None:
            if memory <= 0:
                raise CgroupError(f"memory limit must be positive, not {memory}")
            if self.version == "v2":
                _write(self._need("memory", "memory.max"), str(memory))
                swap = self._file("memory", "memory.swap.max")
                if swap is not None:
                    _write(swap, "0")
            else:
                _write(self._need("memory", "memory.limit_in_bytes"), str(memory))
                swap = self._file("memory", "memory.memsw.limit_in_bytes")
                if swap is not None:  # with swap accounting: no swap beyond the limit either
                    _write(swap, str(memory))
                swappiness = self._file("memory", "memory.swappiness")
                if swappiness is not None:
                    _write(swappiness, "0")
        if cpu is not None:
            if cpu <= 0:
                raise CgroupError(f"cpu limit must be positive, not {cpu}")
            quota = max(1000, round(cpu * CPU_PERIOD_US))
            if self.version == "v2":
                _write(self._need("cpu", "cpu.max"), f"{quota} {CPU_PERIOD_US}")
            else:
                _write(self._need("cpu", "cpu.cfs_period_us"), str(CPU_PERIOD_US))
                _write(self._need("cpu", "cpu.cfs_quota_us"), str(quota))

    def _need(self, controller: str, name: str) -> Path:
        path = self._file(controller, name)
        if path is None:
            raise CgroupError(f"cannot limit {controller}: {name} is missing in {self.dirs}")
        return path

    def limits(self) -> tuple[int | None, float | None]:
        """The limits the kernel has: (memory bytes, cpu cores); None where there is none."""
        memory: int | None = None
        cpu: float | None = None
        if self.version == "v2":
            path = self._file("memory", "memory.max")
            if path is not None and path.read_text().strip() != "max":
                memory = int(path.read_text())
            path = self._file("cpu", "cpu.max")
            if path is not None:
                quota, period = path.read_text().split()
                cpu = None if quota == "max" else int(quota) / int(period)
        else:
            path = self._file("memory", "memory.limit_in_bytes")
            if path is not None and int(path.read_text()) < 2**62:
                memory = int(path.read_text())
            quota_path = self._file("cpu", "cpu.cfs_quota_us")
            period_path = self._file("cpu", "cpu.cfs_period_us")
            if quota_path is not None and period_path is not None and int(quota_path.read_text()) > 0:
                cpu = int(quota_path.read_text()) / int(period_path.read_text())
        return memory, cpu

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of this cgroup."""
        name = "memory.events" if self.version == "v2" else "memory.oom_control"
        path = self._file("memory", name)
        if path is None:
            return False
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        return False

    def kill(self) -> None:
        """SIGKILL every process in the cgroup and wait (up to 10 s) until none is left."""
        kill_file = self.unique_dirs[0] / "cgroup.kill" if self.version == "v2" else None
        deadline = time.monotonic() + 10
        while pids := self.pids():
            if kill_file is not None and kill_file.exists():
                with contextlib.suppress(OSError):
                    kill_file.write_text("1")
            else:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise CgroupError(f"processes {pids} of cgroup {self.name} did not die")
            time.sleep(0.01)

    def close(self) -> None:
        """Kill what is left in the cgroup and remove its dirs."""
        self.kill()
        for directory in self.unique_dirs:
            for _ in range(100):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        raise CgroupError(f"cannot remove {directory}: {e.strerror}") from None
                    time.sleep(0.02)  # the last exits are still being accounted
        if self._on_close is not None:
            self._on_close()
