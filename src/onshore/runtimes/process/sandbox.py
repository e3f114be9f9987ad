"""Linux sandboxes for containers and image builds: namespaces, image layers overlaid on the host's files.

A sandboxed program sees:

- the host's filesystem with the image layers (overlayfs dirs, bottom to top) on top of it.
  RUN mode (`SandboxSpec.upper` is None): the host's own directories are read-only (unless
  `private_host_writes`); the root and the directories the layers provide take writes into private
  scratch space that goes when the sandbox ends.
  BUILD mode: every write outside /tmp, /proc, /dev, /sys and the binds lands in `upper` (new and changed
  files, 0/0 character devices as whiteouts for deletions, opaque dirs marked `user.overlay.opaque=y`), so
  `upper` can become the next layer.
  The layers, `upper`, `scratch` and `SandboxSpec.hidden` are not visible inside;
- a private tmpfs /tmp, its own /proc (a pid namespace: the command is pid 2, under a small init), a
  minimal /dev (null, zero, full, random, urandom, tty, pts, shm) and the host's /sys, read-only;
- the binds at their targets; the host's network (not unshared).

Limits: host files in the directories that lead to a hidden path or a bind target (e.g. /root/.bashrc
when the data dir is /root/.local/share/onshore) and host mounts below an overlaid directory are shown
read-only, also in BUILD mode. In "userns" mode the command is uid 0 of a user namespace that maps only
the server's uid: it cannot change host files owned by others, nor chown to other users.

The spawned process ends as the command did: the same exit code, or killed by the same signal
(asyncio's returncode is then -signal). 125 (EXIT_SETUP_FAILED) means the sandbox could not be set up,
126/127 that the command could not be run; the reason is on stderr. SIGHUP, SIGINT, SIGQUIT, SIGTERM,
SIGUSR1, SIGUSR2 and SIGWINCH sent to the spawned process reach the command; when the spawned process
dies (even by SIGKILL) every process inside dies with it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from onshore.errors import Conflict, NotFound
from onshore.runtimes.host_exec import ExecTarget
from onshore.runtimes.process.sandbox_init import SETUP_FAILED, remove_tree

Mechanism = Literal["root", "userns"]
INIT_PROGRAM = Path(__file__).with_name("sandbox_init.py")
EXIT_SETUP_FAILED = SETUP_FAILED
_SPECIAL = ("proc", "dev", "sys", "tmp")  # top-level dirs the sandbox makes its own


class SandboxError(Exception):
    """The sandbox cannot be made as asked (bad spec, or no mechanism here); the message says why."""


@dataclass(frozen=True)
class Bind:
    source: Path  # host path: a directory or a file (a socket or a device node works too)
    target: str  # absolute path inside the sandbox
    writable: bool = False  # True: writes go to the host's source
    overlay: bool = False  # a directory that takes writes into private scratch; the host's stays as is


@dataclass
class SandboxSpec:
    layers: list[Path] = field(default_factory=list)  # image layer dirs, bottom -> top
    binds: list[Bind] = field(default_factory=list)
    upper: Path | None = None  # BUILD mode: where every write lands; None: RUN mode
    workdir: str = "/root"
    env: dict[str, str] = field(default_factory=dict)  # the command's whole environment
    hidden: list[Path] = field(default_factory=list)  # host paths not to show (e.g. the data dir)
    cgroup_procs: list[Path] = field(default_factory=list)  # cgroup.procs files to join before starting
    # RUN mode: the host's directories take writes too, into private scratch (one more overlay each).
    private_host_writes: bool = False


@dataclass(frozen=True)
class Support:
    mechanism: Literal["root", "userns", "none"]
    reason: str = ""  # why "none" (or why the other mechanisms did not work)

    @property
    def available(self) -> bool:
        return self.mechanism != "none"


def _ancestors(path: str) -> list[str]:
    """Proper ancestors of an absolute path, "/" first."""
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(len(parts))]


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def _is_under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# Kernel filesystems that overlayfs cannot take as a lower dir (a debootstrap's /proc, a cgroup tree...):
# where the host has one mounted, the sandbox shows it read-only as it is.
_NOT_OVERLAYABLE = frozenset(
    {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs", "tracefs", "securityfs", "pstore"}
    | {"bpf", "binfmt_misc", "configfs", "fusectl", "hugetlbfs", "autofs", "nsfs", "efivarfs", "rpc_pipefs"}
)


def _host_mountpoints() -> dict[str, str]:
    """Mount point -> filesystem type, for every mount this process sees."""
    points: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4]  # with " ", tab, newline and "\\" as octal escapes
            fstype = fields[fields.index("-") + 1] if "-" in fields else ""
            points[re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)] = fstype
    return points


def _copy_attributes(made: str, like: str) -> None:
    with contextlib.suppress(OSError):
        st = os.stat(like)
        os.chmod(made, stat.S_IMODE(st.st_mode))
        if os.geteuid() == 0:
            os.chown(made, st.st_uid, st.st_gid)


def _touch(path: str) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


class _Planner:
    """Turns a spec into the init program's plan, and makes the scratch dirs the plan mounts."""

    def __init__(self, spec: SandboxSpec, scratch: Path) -> None:
        self.spec = spec
        self.scratch = str(scratch)
        self.root = str(scratch / "root")
        self.layers = [os.path.realpath(p) for p in spec.layers]
        self.upper = os.path.realpath(spec.upper) if spec.upper is not None else None
        self.targets = {b.target for b in spec.binds}
        reserved = [*self.layers, self.scratch, *(os.path.realpath(p) for p in spec.hidden)]
        if self.upper is not None:
            reserved.append(self.upper)
        self.reserved = set(reserved)
        self.descend = {"/"}
        for path in [*reserved, *self.targets]:
            self.descend.update(_ancestors(path))
        all_mounts = _host_mountpoints()
        self.host_mounts = [
            m for m in all_mounts if not any(_is_under(m, r) or _is_under(r, m) for r in reserved)
        ]
        self.kernel_mounts = {m for m, fstype in all_mounts.items() if fstype in _NOT_OVERLAYABLE}
        self.mounts: list[dict[str, Any]] = []
        self.created: list[str] = []  # dirs made in upper, in the order they were made
        self.count = 0

    def inside(self, path: str) -> str:
        return self.root + path

    def scratch_dir(self, kind: str) -> str:
        self.count += 1
        name = f"{kind}/{self.count}"
        os.makedirs(_join(self.scratch, name))
        return name  # relative to scratch: the init mounts from there

    def layer_path(self, index: int, path: str) -> str:
        return f"l/{index}" + ("" if path == "/" else path)

    def upper_dir(self, path: str) -> str:
        assert self.upper is not None
        target = self.upper + path
        for directory in [*_ancestors(path)[1:], path]:
            made = self.upper + directory
            if not os.path.lexists(made):
                os.mkdir(made)
                self.created.append(made)
        return target

    def resolve(self, path: str, active: list[int]) -> tuple[list[int], bool]:
        """Which layers (top first) hold `path` as a merged dir, and whether the host's entry shows."""
        dirs: list[int] = []
        for index in active:
            entry = self.layers[index] + path
            try:
                st = os.lstat(entry)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):  # a file, or a whiteout: it hides everything below
                return dirs, False
            dirs.append(index)
            with contextlib.suppress(OSError):
                if os.getxattr(entry, "user.overlay.opaque", follow_symlinks=False) == b"y":
                    return dirs, False
        return dirs, True

    def plan(self) -> dict[str, Any]:
        skel, top = _join(self.scratch, "skel"), _join(self.scratch, "top")
        os.mkdir(skel)
        os.mkdir(top)
        os.mkdir(self.root)
        os.mkdir(_join(self.scratch, "l"))
        for index, layer in enumerate(self.layers):
            os.symlink(layer, _join(self.scratch, f"l/{index}"))
        for name in _SPECIAL:
            os.mkdir(_join(top, name))
        lower = ["top", *(f"l/{i}" for i in reversed(range(len(self.layers)))), "skel"]
        self.mounts.append(
            {
                "op": "overlay",
                "target": self.root,
                "lower": lower,
                "upper": self.upper if self.upper is not None else self.scratch_dir("u"),
                "work": self.scratch_dir("w"),
            }
        )
        self.visit("/", list(reversed(range(len(self.layers)))))
        self.mounts += [
            {"op": "proc", "target": self.inside("/proc")},
            {"op": "dev", "target": self.inside("/dev")},
            {"op": "bind", "source": "/sys", "target": self.inside("/sys"), "readonly": True},
            {"op": "tmpfs", "target": self.inside("/tmp"), "options": "mode=1777"},
        ]
        self.binds(top)
        return {
            "mechanism": "",
            "scratch": self.scratch,
            "root": self.root,
            "mounts": self.mounts,
            "workdir": self.spec.workdir,
            "env": self.spec.env,
            "cgroup_procs": [str(p) for p in self.spec.cgroup_procs],
            "remove_if_empty": list(reversed(self.created)),
        }

    def visit(self, directory: str, active: list[int]) -> None:
        """Show the host's entries of a directory the root overlay provides (it leads to a hidden path)."""
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            return  # unreadable for this user: nothing of it can be shown
        for name in names:
            path = _join(directory, name)
            if (directory == "/" and name in _SPECIAL) or path in self.reserved or path in self.targets:
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            dirs, shown = self.resolve(path, active)
            if not shown or (dirs and not stat.S_ISDIR(st.st_mode)):
                continue  # a layer replaces or deletes the host's entry
            skel = _join(self.scratch, "skel") + path
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(path), skel)
            elif stat.S_ISDIR(st.st_mode):
                os.mkdir(skel)
                _copy_attributes(skel, path)
                if path in self.descend:
                    self.visit(path, dirs)
                else:
                    self.host_dir(path, dirs)
            else:
                _touch(skel)
                self.mounts.append(
                    {
                        "op": "bind",
                        "source": path,
                        "target": self.inside(path),
                        "readonly": True,
                        "host_entry": True,
                    }
                )

    def host_dir(self, path: str, dirs: list[int]) -> None:
        if path in self.kernel_mounts or (
            not dirs and self.upper is None and not self.spec.private_host_writes
        ):
            bind = {"op": "bind", "source": path, "target": self.inside(path), "readonly": True}
            self.mounts.append({**bind, "host_entry": True})
            return
        if any(m != path and _is_under(m, path) for m in self.host_mounts):
            # Overlayfs would not show the mounts below its lower dir, and in a user namespace it refuses
            # a lower dir with mounts below it: each entry gets its own mount instead.
            self.visit(path, dirs)
            return
        self.mounts.append(
            {
                "op": "overlay",
                "target": self.inside(path),
                "lower": [*(self.layer_path(i, path) for i in dirs), path],
                "upper": self.upper_dir(path) if self.upper is not None else self.scratch_dir("u"),
                "work": self.scratch_dir("w"),
                # BUILD mode: mount it before the root overlay, whose upper dir holds this one's (the
                # kernel warns about an upper dir below another mount's upper dir otherwise), then move it.
                "stage": self.scratch_dir("stage") if self.upper is not None else None,
                "host_entry": True,
            }
        )

    def binds(self, top: str) -> None:
        ordered = sorted(self.spec.binds, key=lambda b: b.target.count("/"))
        for bind in ordered:
            source = str(bind.source)
            if not os.path.exists(source):
                raise SandboxError(f"bind source {source} does not exist")
            kind = "dir" if os.path.isdir(source) else "file"
            # Mount points under /tmp, /dev or another bind are made at mount time; the others come with
            # the root overlay's top layer, so that making them writes nothing into upper.
            at_mount = bind.target.startswith(("/tmp/", "/dev/")) or any(
                other.target != bind.target and _is_under(bind.target, other.target) for other in ordered
            )
            if not at_mount:
                for directory in _ancestors(bind.target)[1:]:
                    if os.path.islink(directory):
                        raise SandboxError(
                            f"bind target {bind.target} goes through the symlink {directory}: "
                            "use the path it points to"
                        )
                    if not os.path.isdir(top + directory):
                        os.mkdir(top + directory)
                        if os.path.isdir(directory):
                            _copy_attributes(top + directory, directory)
                (os.mkdir if kind == "dir" else _touch)(top + bind.target)
            create = kind if at_mount else None
            if bind.overlay:
                if bind.writable or kind != "dir":
                    raise SandboxError(f"bind {bind.target}: overlay needs a directory and writable=False")
                self.mounts.append(
                    {
                        "op": "overlay",
                        "target": self.inside(bind.target),
                        "lower": [source],
                        "upper": self.scratch_dir("u"),
                        "work": self.scratch_dir("w"),
                        "create": create,
                    }
                )
            else:
                self.mounts.append(
                    {
                        "op": "bind",
                        "source": source,
                        "target": self.inside(bind.target),
                        "readonly": not bind.writable,
                        "create": create,
                    }
                )


def _check(spec: SandboxSpec, argv: list[str], scratch: Path) -> None:
    if not argv:
        raise SandboxError("no command to run")
    if not spec.workdir.startswith("/"):
        raise SandboxError(f"workdir must be absolute, not {spec.workdir!r}")
    for layer in spec.layers:
        if not layer.is_dir():
            raise SandboxError(f"image layer {layer} is not a directory")
    for bind in spec.binds:
        target = bind.target
        if not target.startswith("/") or os.path.normpath(target) != target or target == "/":
            raise SandboxError(f"bind target must be a normalized absolute path below /, not {target!r}")
        if _is_under(target, "/proc") or _is_under(target, "/sys"):
            raise SandboxError(f"bind target {target}: /proc and /sys are the sandbox's own")
    if len({b.target for b in spec.binds}) != len(spec.binds):
        raise SandboxError("two binds have the same target")
    trees = [("layer", os.path.realpath(p)) for p in spec.layers] + [("scratch", str(scratch))]
    if spec.upper is not None:
        trees.append(("upper", os.path.realpath(spec.upper)))
    for i, (kind, path) in enumerate(trees):
        for other_kind, other in trees[i + 1 :]:
            if _is_under(path, other) or _is_under(other, path):
                raise SandboxError(f"the {kind} {path} and the {other_kind} {other} overlap")
    if spec.upper is not None:
        spec.upper.mkdir(parents=True, exist_ok=True)
        scratch.mkdir(parents=True, exist_ok=True)
        if os.stat(spec.upper).st_dev != os.stat(scratch).st_dev:
            raise SandboxError(
                f"upper ({spec.upper}) and scratch ({scratch}) must be on the same filesystem: "
                "overlayfs keeps its work dirs next to the upper dir"
            )


def command(
    spec: SandboxSpec, argv: list[str], scratch: Path, mechanism: Mechanism | None = None
) -> list[str]:
    """The argv to spawn so that `argv` runs in the sandbox `spec` describes.

    `scratch` must be absent or empty; the sandbox keeps everything it makes there (mount points, private
    writes, overlay work dirs) and the spawned process removes it when it ends. If it is never spawned, or
    is killed with SIGKILL, call cleanup(scratch). `mechanism` defaults to what probe() finds.
    """
    if mechanism is None:
        support = probe()
        if not support.available:
            raise SandboxError(f"no sandbox on this machine: {support.reason}")
        mechanism = "root" if support.mechanism == "root" else "userns"
    scratch = Path(os.path.abspath(scratch))
    if scratch.exists() and any(scratch.iterdir()):
        raise SandboxError(f"scratch dir {scratch} is not empty")
    try:
        _check(spec, argv, scratch)
        scratch.mkdir(parents=True, exist_ok=True)
        plan = _Planner(spec, scratch).plan()
        plan["mechanism"] = mechanism
        plan["argv"] = list(argv)
        config = scratch / "sandbox.json"
        fd = os.open(config, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)  # the env may hold secrets
        with os.fdopen(fd, "w") as f:
            json.dump(plan, f)
    except BaseException:
        cleanup(scratch)  # (it was absent or empty)
        raise
    return [sys.executable, "-I", "-S", str(INIT_PROGRAM), str(config)]


def cleanup(scratch: Path) -> None:
    """Remove what a sandbox left in scratch (needed only when its process was killed or never ran)."""
    remove_tree(str(scratch))


# -------------------------------------------------------------------------------------------- probe
def _hints() -> str:
    hints = []
    for path, bad, text in (
        ("/proc/sys/kernel/unprivileged_userns_clone", "0", "kernel.unprivileged_userns_clone is 0"),
        ("/proc/sys/user/max_user_namespaces", "0", "user.max_user_namespaces is 0"),
        (
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "1",
            "AppArmor restricts unprivileged user namespaces (apparmor_restrict_unprivileged_userns=1)",
        ),
    ):
        with contextlib.suppress(OSError):
            if Path(path).read_text().strip() == bad:
                hints.append(text)
    return f" ({'; '.join(hints)})" if hints else ""


@functools.cache
def _try(mechanism: Mechanism) -> str:
    """Run a small BUILD-mode sandbox with this mechanism: "" if it works, else why not."""
    with tempfile.TemporaryDirectory(prefix="onshore-sandbox-probe-") as tmp:
        upper, scratch = Path(tmp) / "upper", Path(tmp) / "scratch"
        spec = SandboxSpec(upper=upper, workdir="/", env={"PATH": "/usr/bin:/bin"})
        script = "echo ok > /tmp/probe && test -e /proc/self/status && touch /probe"
        try:
            argv = command(spec, ["/bin/sh", "-c", script], scratch, mechanism)
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (SandboxError, OSError, subprocess.TimeoutExpired) as e:
            cleanup(scratch)
            return str(e)
        if done.returncode != 0:
            return done.stderr.strip()[-500:] or f"exited with {done.returncode}"
        if not (upper / "probe").exists():
            return "a write in BUILD mode did not reach the upper dir"
    return ""


def probe(mechanism: Mechanism | None = None) -> Support:
    """Which mechanism works here ("root", else "userns"), by running a small sandbox; cached."""
    if sys.platform != "linux":
        return Support("none", f"sandboxes need Linux namespaces and overlayfs; this is {sys.platform}")
    if mechanism is not None:
        order: list[Mechanism] = [mechanism]
    else:
        order = ["root", "userns"] if os.geteuid() == 0 else ["userns"]
    reasons = []
    for candidate in order:
        if candidate == "root" and os.geteuid() != 0:
            reasons.append("root: this process is not root")
            continue
        error = _try(candidate)
        if not error:
            return Support(candidate)
        reasons.append(f"{candidate}: {error}{_hints() if candidate == 'userns' else ''}")
    return Support("none", "; ".join(reasons))


def init_pid(spawned: int) -> int:
    """The pid of a sandbox's init (the child of the spawned launcher, inside the namespaces); 0 if none."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(raw[raw.rindex(")") + 2 :].split()[1]) == spawned:
                return int(entry)
    return 0


def sandbox_target(spawned: int, user_namespace: bool, env: dict[str, str], cwd: str) -> ExecTarget:
    """How to run a command in a sandboxed container: enter the namespaces and root of its init process."""
    nsenter = shutil.which("nsenter")
    if nsenter is None:
        raise Conflict("`modal container exec` into an isolated container needs nsenter (util-linux)")
    init = init_pid(spawned)
    if not init:
        raise NotFound("The container's sandbox has no running init process")
    flags = ["--mount", "--pid", "--root", "--wd"]
    if user_namespace:
        flags += ["--user", "--preserve-credentials"]
    return ExecTarget(spawned, env, cwd, [nsenter, f"--target={init}", *flags], root=f"/proc/{init}/root")
