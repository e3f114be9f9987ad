"""What the cgroup code writes and reads in v1 and v2 cgroup dirs, on fake dirs shaped like the kernel's.

The kernel behaviour (limits enforced, OOM kills) is tested on this machine's cgroups in
tests/runtime/test_cgroups.py; this machine has cgroup v1 controllers only, so the v2 files are checked here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from onshore.runtimes.process.cgroups import CPU_PERIOD_US, Cgroup, CgroupError


def _fake(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir()
    for name, content in files.items():
        (directory / name).write_text(content)
    return directory


V2_FILES = {
    "cgroup.procs": "",
    "memory.max": "max\n",
    "memory.swap.max": "max\n",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    "cpu.max": f"max {CPU_PERIOD_US}\n",
}


def test_v2_limits_are_written_in_its_formats(tmp_path: Path) -> None:
    d = _fake(tmp_path / "c", V2_FILES)
    group = Cgroup("c", "v2", {"memory": d, "cpu": d})
    assert group.limits() == (None, None)
    group._limit(256 * 1024 * 1024, 0.5)
    assert (d / "memory.max").read_text() == str(256 * 1024 * 1024)
    assert (d / "memory.swap.max").read_text() == "0"  # no swap beyond the limit
    assert (d / "cpu.max").read_text() == f"{CPU_PERIOD_US // 2} {CPU_PERIOD_US}"
    assert group.limits() == (256 * 1024 * 1024, 0.5)
    assert group.procs_files == [d / "cgroup.procs"]  # one dir for both controllers


def test_v2_oom_kill_is_read_from_memory_events(tmp_path: Path) -> None:
    d = _fake(tmp_path / "c", V2_FILES)
    group = Cgroup("c", "v2", {"memory": d, "cpu": d})
    assert not group.oom_killed()
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert group.oom_killed()


def test_v2_without_a_cpu_file_refuses_a_cpu_limit(tmp_path: Path) -> None:
    d = _fake(tmp_path / "c", {k: v for k, v in V2_FILES.items() if k != "cpu.max"})
    with pytest.raises(CgroupError, match=r"cpu\.max is missing"):
        Cgroup("c", "v2", {"memory": d, "cpu": d})._limit(None, 1.0)


def test_v1_limits_are_written_in_its_formats(tmp_path: Path) -> None:
    memory = _fake(
        tmp_path / "memory",
        {
            "cgroup.procs": "",
            "memory.limit_in_bytes": str(2**63 - 4096),
            "memory.memsw.limit_in_bytes": str(2**63 - 4096),
            "memory.swappiness": "60",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        },
    )
    cpu = _fake(
        tmp_path / "cpu", {"cgroup.procs": "", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1"}
    )
    group = Cgroup("c", "v1", {"memory": memory, "cpu": cpu})
    assert group.limits() == (None, None)
    group._limit(128 * 1024 * 1024, 2.0)
    assert (memory / "memory.limit_in_bytes").read_text() == str(128 * 1024 * 1024)
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == str(128 * 1024 * 1024)
    assert (memory / "memory.swappiness").read_text() == "0"
    assert (cpu / "cpu.cfs_quota_us").read_text() == str(2 * CPU_PERIOD_US)
    assert group.limits() == (128 * 1024 * 1024, 2.0)
    assert group.procs_files == [cpu / "cgroup.procs", memory / "cgroup.procs"]
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert group.oom_killed()
