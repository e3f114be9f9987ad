"""The sandbox's init program: enters namespaces, mounts the planned filesystem, runs one command as pid 1.

Run as `python -I -S sandbox_init.py CONFIG` (standard library only: it must not import the server's
packages). CONFIG is the JSON plan that onshore.runtimes.process.sandbox.command() wrote; this file reads and
deletes it. Three processes take part:

  host process (the one spawned)  joins the cgroups, creates the user namespace (userns mode) and the pid
                                  namespace, forks the init, forwards signals to it, waits, cleans scratch
                                  up and ends with the command's status (same exit code, or the same signal).
  init (pid 1 inside)             dies with the host process (PR_SET_PDEATHSIG), makes a mount namespace,
                                  mounts, pivot_roots, forks the command, forwards signals to it, reaps
                                  orphans, and reports the command's status on a pipe.
  command (pid 2 inside)          execs the argv with the plan's environment and working directory.

When the init ends, the kernel kills every other process of the pid namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import platform
import resource
import select
import shutil
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
PR_SET_PDEATHSIG = 1
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
SYS_MOUNT_SETATTR = 442  # the same number on every architecture
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

SETUP_FAILED = 125  # exit status when the sandbox could not be set up (as `docker run` uses it)
FORWARDED = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus")

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """A step of the sandbox's setup failed; the message names the step and the system's error."""


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def _fail(what: str) -> SetupError:
    err = ctypes.get_errno()
    return SetupError(f"{what}: {os.strerror(err)} ({errno.errorcode.get(err, err)})")


def _unshare(flags: int, what: str) -> None:
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        raise _fail(f"unshare({what})")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    result = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    if result != 0:
        kind = fstype or ("bind" if flags & MS_BIND else "move" if flags & MS_MOVE else "remount")
        detail = f" -o {data}" if data else ""
        raise _fail(f"mount {kind} {source or ''} on {target}{detail}")


def _read_only(target: str) -> None:
    """Make a mount and every mount below it read-only (adds the flag, keeps the locked ones)."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    result = _libc.syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR),
        ctypes.c_int(AT_FDCWD),
        _b(target),
        ctypes.c_uint(AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    if result != 0:
        if ctypes.get_errno() != errno.ENOSYS:
            raise _fail(f"mount_setattr(read-only) {target}")
        _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)  # kernel < 5.12: top mount only


def _pivot_root(new_root: str, put_old: str) -> None:
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise SetupError(f"pivot_root: unknown system call number on {platform.machine()}")
    if _libc.syscall(ctypes.c_long(number), _b(new_root), _b(put_old)) != 0:
        raise _fail("pivot_root")


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise SetupError(f"write {text.strip()!r} to {path}: {e.strerror}") from None


# ------------------------------------------------------------------------------------------- mounts
def _ensure(path: str, kind: str) -> None:
    if os.path.lexists(path):
        return
    try:
        if kind == "dir":
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    except OSError as e:
        raise SetupError(f"create the mount point {path}: {e.strerror}") from None


def _overlay(op: dict[str, Any], target: str) -> None:
    def esc(path: str) -> str:
        return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")

    options = ["lowerdir=" + ":".join(esc(p) for p in op["lower"])]
    options += [f"upperdir={esc(op['upper'])}", f"workdir={esc(op['work'])}"]
    # user.overlay.* xattrs (opaque dirs) in both modes, so layers built either way read the same.
    options += ["userxattr", "index=off", "metacopy=off"]
    _mount("overlay", target, "overlay", 0, ",".join(options))


def _overlay_host_dir(op: dict[str, Any], target: str) -> bool:
    """_overlay; for a host directory (its last lower dir) that was removed since the plan listed it, nothing
    (False): like a host entry's bind, its place shows empty. Other failures fail the start."""
    try:
        _overlay(op, target)
    except SetupError:
        if op.get("host_entry") and not os.path.lexists(op["lower"][-1]):
            return False
        raise
    return True


def _dev(target: str) -> None:
    _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755")
    for name in DEV_NODES:
        if os.path.exists(f"/dev/{name}"):
            _ensure(f"{target}/{name}", "file")
            _mount(f"/dev/{name}", f"{target}/{name}", None, MS_BIND)
    for name, points_to in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ):
        os.symlink(points_to, f"{target}/{name}")
    for name in ("pts", "shm"):
        os.mkdir(f"{target}/{name}")
    _mount("devpts", f"{target}/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    _mount("tmpfs", f"{target}/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")


def _proc(target: str) -> None:
    _mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in PROC_READ_ONLY:
        path = f"{target}/{name}"
        if os.path.exists(path):
            _mount(path, path, None, MS_BIND | MS_REC)
            _read_only(path)


def _bind(op: dict[str, Any]) -> None:
    source, target = op["source"], op["target"]
    if op.get("optional"):
        # A host mount shown again inside an overlay: only where the overlay still has that path.
        if not os.path.exists(source) or os.path.isdir(source) != os.path.isdir(target):
            return
    elif op.get("create"):
        _ensure(target, op["create"])
    try:
        _mount(source, target, None, MS_BIND | MS_REC)
    except SetupError:
        if op.get("host_entry") and not os.path.lexists(source):
            return  # a host entry removed since the plan listed it: the container does not see it either
        raise
    if op["readonly"]:
        _read_only(target)


def _mount_all(plan: dict[str, Any]) -> None:
    # Nothing mounted here may reach the host's mount namespace.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    os.chdir(plan["scratch"])  # overlay layer paths may be relative to scratch (short mount options)
    skipped: set[str] = set()  # host directories removed since the plan listed them: not shown either
    for op in plan["mounts"]:
        if op["op"] == "overlay" and op.get("stage"):
            if not _overlay_host_dir(op, op["stage"]):  # mounted early, moved into place below
                skipped.add(op["stage"])
    for op in plan["mounts"]:
        kind = op["op"]
        if kind == "overlay" and op.get("stage"):
            if op["stage"] not in skipped:
                _mount(op["stage"], op["target"], None, MS_MOVE)
        elif kind == "overlay":
            if op.get("create"):
                _ensure(op["target"], "dir")
            _overlay_host_dir(op, op["target"])
        elif kind == "bind":
            _bind(op)
        elif kind == "tmpfs":
            _mount("tmpfs", op["target"], "tmpfs", MS_NOSUID | MS_NODEV, op["options"])
        elif kind == "proc":
            _proc(op["target"])
        elif kind == "dev":
            _dev(op["target"])
        else:
            raise SetupError(f"unknown mount step {kind!r}")
    os.chdir(plan["root"])
    _pivot_root(".", ".")  # the old root ends up stacked on the new one, and is detached next
    if _libc.umount2(b".", ctypes.c_int(MNT_DETACH)) != 0:
        raise _fail("detach the host's root")
    os.chdir("/")
    try:
        os.chdir(plan["workdir"])
    except OSError as e:
        raise SetupError(f"working directory {plan['workdir']}: {e.strerror}") from None


# ---------------------------------------------------------------------------------------- processes
def _block_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)


def _unblock_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)


def _forward_to(pid_box: list[int]) -> None:
    def handler(signum: int, _frame: object) -> None:
        if pid_box:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid_box[0], signum)

    for sig in FORWARDED:
        signal.signal(sig, handler)


def _never_return(function: Callable[..., None], *args: Any) -> NoReturn:
    """Run a forked child's part; whatever happens, the child never returns into its parent's code."""
    try:
        function(*args)
    except BaseException:
        traceback.print_exc()
    os._exit(SETUP_FAILED)


def _exec_command(plan: dict[str, Any]) -> None:
    """In the command's process: default signal handling (Python ignores SIGPIPE), then exec."""
    for sig in (*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    _unblock_signals()
    argv: list[str] = plan["argv"]
    try:
        os.execvpe(argv[0], argv, plan["env"])
    except OSError as e:
        os.write(2, f"onshore sandbox: cannot run {argv[0]}: {e.strerror}\n".encode())
        os._exit(127 if e.errno == errno.ENOENT else 126)


def _init(plan: dict[str, Any], alive_r: int, status_w: int) -> None:
    """Pid 1 of the sandbox; never returns."""
    try:
        if _libc.prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL)) != 0:
            raise _fail("prctl(PR_SET_PDEATHSIG)")
        if select.select([alive_r], [], [], 0)[0]:  # EOF: the host process died before prctl
            os._exit(SETUP_FAILED)
        os.setsid()  # a terminal's signals reach the host process only, which forwards them once
        _unshare(CLONE_NEWNS | CLONE_NEWIPC, "CLONE_NEWNS|CLONE_NEWIPC")
        _mount_all(plan)
    except (SetupError, OSError) as e:
        os.write(2, f"onshore sandbox: {e}\n".encode())
        os._exit(SETUP_FAILED)
    child: list[int] = []
    _forward_to(child)
    pid = os.fork()
    if pid == 0:
        _never_return(_exec_command, plan)
    child.append(pid)
    _unblock_signals()
    status = 0
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if reaped == pid:
            break
    if os.WIFSIGNALED(status):
        report = f"signal {os.WTERMSIG(status)}"
    else:
        report = f"exit {os.waitstatus_to_exitcode(status)}"
    os.write(status_w, report.encode())
    os._exit(0)


def _enter_user_namespace() -> None:
    uid, gid = os.getuid(), os.getgid()
    _unshare(CLONE_NEWUSER, "CLONE_NEWUSER")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1\n")
    _write("/proc/self/gid_map", f"0 {gid} 1\n")


def remove_tree(path: str) -> None:
    """Remove a scratch tree, including the mode-0 directories overlayfs leaves in its work dirs."""

    def retry(function: Any, failed: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o700)
        if os.path.isdir(failed) and not os.path.islink(failed):
            with contextlib.suppress(OSError):
                os.chmod(failed, 0o700)
            shutil.rmtree(failed, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(failed)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=retry)


def _cleanup(plan: dict[str, Any]) -> None:
    for path in plan["remove_if_empty"]:  # deepest first
        with contextlib.suppress(OSError):
            os.rmdir(path)
    remove_tree(plan["scratch"])


def _end_like(report: str, fallback: int) -> None:
    """End this process the way the command ended: same exit code, or killed by the same signal."""
    kind, _, value = report.partition(" ")
    if kind == "exit":
        os._exit(int(value))
    if kind == "signal":
        sig = int(value)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(fallback)


def main(config_path: str) -> None:
    _block_signals()  # until the init exists to forward them to (the init itself keeps them blocked)
    with open(config_path) as f:
        plan: dict[str, Any] = json.load(f)
    os.unlink(config_path)
    try:
        for procs in plan["cgroup_procs"]:
            _write(procs, str(os.getpid()))
        if plan["mechanism"] == "userns":
            _enter_user_namespace()
        _unshare(CLONE_NEWPID, "CLONE_NEWPID")
    except SetupError as e:
        os.write(2, f"onshore sandbox: {e}\n".encode())
        _cleanup(plan)
        os._exit(SETUP_FAILED)
    alive_r, alive_w = os.pipe()
    status_r, status_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(alive_w)
        os.close(status_r)
        _never_return(_init, plan, alive_r, status_w)
    _forward_to([pid])
    os.close(alive_r)
    os.close(status_w)
    _unblock_signals()
    _, status = os.waitpid(pid, 0)
    report = b""
    while chunk := os.read(status_r, 64):
        report += chunk
    _cleanup(plan)
    _end_like(report.decode(), os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else SETUP_FAILED)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -I -S sandbox_init.py CONFIG")
    main(sys.argv[1])
