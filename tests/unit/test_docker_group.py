"""`make test` runs on pytest-xdist workers: the docker tests must all land on one of them (one dockerd)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_docker_tests_share_one_worker(tmp_path: Path) -> None:
    # A stand-in suite laid out like ours: the root conftest's grouping hook, six docker tests and two others.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "tests" / "docker").mkdir(parents=True)
    (tmp_path / "tests" / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
        "from tests.conftest import pytest_collection_modifyitems\n"
    )
    for i in range(6):
        (tmp_path / "tests" / "docker" / f"test_d{i}.py").write_text(f"def test_d{i}():\n    pass\n")
    for i in range(2):
        (tmp_path / "tests" / f"test_o{i}.py").write_text(f"def test_o{i}():\n    pass\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-v",
            "-p",
            "no:cacheprovider",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "tests",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    workers = set(re.findall(r"\[(gw\d+)\] \[ *\d+%\] PASSED tests/docker/", run.stdout))
    assert len(workers) == 1, run.stdout  # pytest 9.2 with xdist 3.8 splits them (pytest-xdist#1386)
    assert len(re.findall(r"PASSED tests/docker/", run.stdout)) == 6, run.stdout
