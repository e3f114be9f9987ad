"""The Linux mount calls a volume needs, through ctypes: an overlay mounted on the host, and the helper
program that swaps one in (or binds a host mount) inside a container's mount namespace.

setns into another mount namespace needs a single-threaded process, so the swap runs as a program of its own:
`python -I -S mount_syscalls.py swap PID TARGET LOWERS UPPER WORK` (LOWERS one per line, UPPER and WORK ""
for a read-only overlay) or `... bind PID TARGET SOURCE`; exit status 0 (done), 3 (busy) or 4 (failed, the
reason on stderr). It imports the standard library only, so it starts in about 15 ms.
"""

from __future__ import annotations

import ctypes
import os
import sys

EXIT_BUSY = 3
EXIT_FAILED = 4

_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 428, 429, 430, 431, 432
_FSCONFIG_SET_STRING, _FSCONFIG_CMD_CREATE = 1, 6
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_OPEN_TREE_CLONE = 1
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
_MS_RDONLY, _MS_NOSUID, _MS_NODEV = 1, 2, 4
_CLONE_NEWNS = 0x00020000
_MNT_DETACH = 2
_AT_FDCWD = -100

_libc = ctypes.CDLL(None, use_errno=True)


class MountError(Exception):
    """A mount or unmount failed; busy: because the mount is in use (open files, a cwd in it)."""

    def __init__(self, message: str, busy: bool = False) -> None:
        super().__init__(message)
        self.busy = busy


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise MountError(f"{what}: {os.strerror(err)}", busy=err == 16)  # EBUSY
    return result


def _escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def _lowerdir(lowers: list[str]) -> str:
    return ":".join(_escape(p) for p in lowers)


def overlay_options(lowers: list[str], upper: str, work: str) -> str:
    options = [f"lowerdir={_lowerdir(lowers)}"]
    if upper:
        options += [f"upperdir={_escape(upper)}", f"workdir={_escape(work)}"]
    return ",".join(options + ["index=off", "metacopy=off", "redirect_dir=off"])


def mount_overlay(point: str, lowers: list[str], upper: str = "", work: str = "") -> None:
    """Mount an overlay at point on the host, lower dirs top first ("" upper: read-only, which takes two lower
    dirs at least)."""
    # No setuid binaries or device nodes from a volume: whoever wrote them, they stay plain files.
    flags = _MS_NOSUID | _MS_NODEV | (0 if upper else _MS_RDONLY)
    data = overlay_options(lowers, upper, work).encode()
    _check(_libc.mount(b"overlay", point.encode(), b"overlay", flags, data), f"mount an overlay at {point}")


def unmount(point: str) -> None:
    """Detach a host mount (lazily: what still uses it keeps it until done); nothing mounted is fine."""
    if _libc.umount2(point.encode(), _MNT_DETACH) < 0 and ctypes.get_errno() not in (22, 2):  # EINVAL, ENOENT
        _check(-1, f"unmount {point}")


def _fsconfig(fd: int, key: str, value: str) -> None:
    _check(_libc.syscall(_SYS_FSCONFIG, fd, _FSCONFIG_SET_STRING, key.encode(), value.encode(), 0), key)


def _new_overlay(lower: str, upper: str, work: str) -> int:
    """A detached overlay mount (made in this process's namespace, where the server's paths resolve)."""
    fs = _check(_libc.syscall(_SYS_FSOPEN, b"overlay", 1), "fsopen overlay")
    _fsconfig(fs, "lowerdir", _lowerdir(lower.split("\n")))
    if upper:
        _fsconfig(fs, "upperdir", upper)
        _fsconfig(fs, "workdir", work)
    for key, value in (("index", "off"), ("metacopy", "off"), ("redirect_dir", "off")):
        _fsconfig(fs, key, value)
    _check(_libc.syscall(_SYS_FSCONFIG, fs, _FSCONFIG_CMD_CREATE, None, None, 0), "create the overlay")
    attrs = _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | (0 if upper else _MOUNT_ATTR_RDONLY)
    return _check(_libc.syscall(_SYS_FSMOUNT, fs, 1, attrs), "fsmount")


def _enter(pid: str) -> None:
    """Enter the mount namespace and the root of pid, as its processes see them."""
    ns = os.open(f"/proc/{int(pid)}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    root = os.open(f"/proc/{int(pid)}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    _check(_libc.setns(ns, _CLONE_NEWNS), "enter the container's mount namespace")
    os.fchdir(root)
    os.chroot(".")


def _helper(argv: list[str]) -> int:
    verb, pid, target = argv[:3]
    previous = -1
    if verb == "swap":
        mnt = _new_overlay(*argv[3:6])
        _enter(pid)
        # A copy of the mount there, to put back should the new one fail to go in after the old one left.
        previous = _check(
            _libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, target.encode(), _OPEN_TREE_CLONE | os.O_CLOEXEC),
            f"clone the mount at {target}",
        )
        _check(_libc.umount2(target.encode(), 0), f"unmount {target}")
    elif verb == "bind":
        mnt = _check(
            _libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, argv[3].encode(), _OPEN_TREE_CLONE | os.O_CLOEXEC),
            f"clone the mount at {argv[3]}",
        )
        _enter(pid)
        os.makedirs(target, exist_ok=True)
    else:
        raise ValueError(f"unknown verb {verb!r}")
    try:
        _check(_move(mnt, target), f"mount at {target}")
    except MountError:
        if previous >= 0:
            _move(previous, target)  # the container keeps the view it had
        raise
    return 0


def _move(mount_fd: int, target: str) -> int:
    return int(
        _libc.syscall(_SYS_MOVE_MOUNT, mount_fd, b"", _AT_FDCWD, target.encode(), _MOVE_MOUNT_F_EMPTY_PATH)
    )


def main() -> int:
    try:
        return _helper(sys.argv[1:])
    except MountError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BUSY if exc.busy else EXIT_FAILED
    except (OSError, ValueError, IndexError) as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
