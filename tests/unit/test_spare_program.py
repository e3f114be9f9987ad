"""The spare process's program: code copied into its directory after it started is still found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from onshore.runtimes.process.spare import spare_program


def test_code_copied_in_after_start_is_imported_even_with_the_dirs_old_mtime(tmp_path: Path) -> None:
    # The entrypoint stands in for the client's: its import (while the spare waits) makes the import
    # system list the working directory, still empty; run as __main__ it imports the user's module.
    lib, work = tmp_path / "lib", tmp_path / "work"
    lib.mkdir()
    work.mkdir()
    (lib / "stand_in_entrypoint.py").write_text(
        "if __name__ == '__main__':\n"
        "    import user_app\n"
        "    print(user_app.VALUE, flush=True)\n"
        "else:\n"
        "    print('imported', flush=True)\n"
    )
    listed_at = work.stat().st_mtime_ns
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    spare = subprocess.Popen(
        [sys.executable, "-c", spare_program("stand_in_entrypoint")],
        cwd=work,
        env={**env, "PYTHONPATH": str(lib)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert spare.stdout is not None and spare.stdout.readline().strip() == "imported"
        # The container's code arrives, and the directory keeps the time it had when it was listed (as
        # when the copy takes its source's times, or lands within one tick of the file system's clock).
        (work / "user_app.py").write_text("VALUE = 'found'\n")
        os.utime(work, ns=(listed_at, listed_at))
        out, err = spare.communicate(json.dumps({"env": {}, "cwd": str(work)}) + "\n", timeout=60)
    finally:
        if spare.poll() is None:
            spare.kill()
            spare.wait()
    assert spare.returncode == 0, err
    assert out.strip() == "found"
