"""Cgroups on this machine: memory limits OOM-kill, CPU quotas apply, closing leaves nothing behind."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onshore.runtimes.process import sandbox
from onshore.runtimes.process.cgroups import CgroupError, Cgroups
from onshore.runtimes.process.sandbox import SandboxSpec

MIB = 1 << 20
HOG = "x = bytearray(512 << 20); print('survived')"  # touches every page of 512 MiB


def limited() -> Cgroups:
    support = Cgroups.probe()
    if not support.available:
        pytest.skip(f"no cgroups here: {support.reason}")
    missing = {"memory", "cpu"} - set(support.controllers)
    if missing:
        pytest.skip(f"cgroup {support.version} here lacks {', '.join(sorted(missing))}: {support.reason}")
    return Cgroups(f"test-{os.getpid()}")


@pytest.fixture
def cgroups() -> Iterator[Cgroups]:
    groups = limited()
    yield groups
    groups.close()


def test_probe_says_which_version() -> None:
    support = Cgroups.probe()
    assert support.version in ("v1", "v2", "none")
    assert support.available or support.reason


def test_memory_limit_oom_kills_and_is_reported(cgroups: Cgroups) -> None:
    group = cgroups.create("oom", 64 * MIB, None)
    assert group.limits() == (64 * MIB, None)
    proc = subprocess.run([sys.executable, "-c", HOG], preexec_fn=group.join, capture_output=True, timeout=60)
    assert proc.returncode == -9 and b"survived" not in proc.stdout
    assert group.oom_killed()

    roomy = cgroups.create("roomy", 1024 * MIB, None)
    proc = subprocess.run([sys.executable, "-c", HOG], preexec_fn=roomy.join, capture_output=True, timeout=60)
    assert proc.stdout == b"survived\n" and not roomy.oom_killed()


def test_sandboxed_container_joins_its_cgroup(cgroups: Cgroups, tmp_path: Path) -> None:
    support = sandbox.probe()
    if not support.available:
        pytest.skip(f"no sandbox here: {support.reason}")
    group = cgroups.create("boxed", 64 * MIB, None)
    spec = SandboxSpec(workdir="/", env={"PATH": "/usr/bin:/bin"}, cgroup_procs=group.procs_files)
    python = os.path.realpath(sys.executable)
    argv = sandbox.command(spec, [python, "-I", "-c", HOG], tmp_path / "scratch")
    proc = subprocess.run(argv, capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr  # the command was OOM-killed, and the sandbox says so
    assert group.oom_killed()
    assert not (tmp_path / "scratch").exists()


def test_cpu_quota_applies(cgroups: Cgroups) -> None:
    group = cgroups.create("cpu", None, 0.25)
    assert group.limits() == (None, 0.25)
    spin = "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", spin], preexec_fn=group.join, check=True, timeout=60)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # A busy loop gets about a quarter of one core (Python's own start-up runs under the quota too).
    assert used < 0.45 * wall, (used, wall)


def test_close_kills_what_is_left_and_removes_the_dirs() -> None:
    groups = limited()
    group = groups.create("left", 256 * MIB, 1.0)
    procs = [subprocess.Popen(["sleep", "1000"], preexec_fn=group.join) for _ in range(2)]
    assert group.pids() == sorted(p.pid for p in procs)
    dirs = group.unique_dirs
    assert all(d.is_dir() for d in dirs)
    groups.close()
    assert [p.wait(timeout=10) for p in procs] == [-9, -9]
    assert not any(d.exists() for d in dirs)
    assert not any(d.parent.exists() for d in dirs), "the server's dir goes too"


def test_bad_requests_are_refused(cgroups: Cgroups) -> None:
    with pytest.raises(CgroupError, match="bad cgroup name"):
        cgroups.create("../escape", None, None)
    with pytest.raises(CgroupError, match="positive"):
        cgroups.create("zero", 0, None)
    cgroups.create("twice", None, None)
    with pytest.raises(CgroupError, match="exists already"):
        cgroups.create("twice", None, None)


def test_v2_without_controllers_tracks_and_kills_but_refuses_limits() -> None:
    """On hybrid hosts (controllers bound to v1), the unified hierarchy still holds and kills processes."""
    support = Cgroups.probe("v2")
    if not support.available:
        pytest.skip(f"no usable cgroup v2 here: {support.reason}")
    if {"memory", "cpu"} <= set(support.controllers):
        pytest.skip("cgroup v2 has the memory and cpu controllers here: the tests above cover it")
    groups = Cgroups(f"test-v2-{os.getpid()}", version="v2")
    try:
        with pytest.raises(CgroupError, match="no memory controller in cgroup v2"):
            groups.create("limited", 64 * MIB, None)
        group = groups.create("plain", None, None)
        proc = subprocess.Popen(["sleep", "1000"], preexec_fn=group.join)
        assert group.pids() == [proc.pid] and not group.oom_killed()
        group.close()
        assert proc.wait(timeout=10) == -9 and not group.unique_dirs[0].exists()
    finally:
        groups.close()
