"""`make test` without a usable dockerd: one line at the end says why the docker tests were skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


# `make test` runs the suite on pytest-xdist workers; the line must come from the controller there too.
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_skipped_docker_tests_end_the_run_with_the_reason_and_the_fix(
    tmp_path: Path, workers: list[str]
) -> None:
    # A stand-in suite laid out like ours: the root conftest's summary hook, and a docker test that skips
    # with the reason the private dockerd gives where it cannot run.
    (tmp_path / "tests" / "docker").mkdir(parents=True)
    (tmp_path / "tests" / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\nfrom tests.conftest import pytest_terminal_summary\n"
    )
    (tmp_path / "tests" / "docker" / "test_engine.py").write_text(
        "import pytest\n\n\ndef test_engine():\n    pytest.skip('no /usr/sbin/dockerd: install docker.io')\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *workers, "tests"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert (
        "1 docker runtime tests skipped: no /usr/sbin/dockerd: install docker.io. To run them, install what "
        "they need (as root: bash .ci/setup-docker.sh) and run make test again."
    ) in run.stdout
