"""The program a spare container process runs: import the client's entrypoint, then become a container."""

from __future__ import annotations

# How many custom images keep a spare process ready (the most recently started ones).
IMAGE_SPARE_KINDS = 2

# How often a spare that failed to start is tried (the waits between tries double).
SPARE_ATTEMPTS = 4


def spare_program(entrypoint: str = "modal._container_entrypoint") -> str:
    """Python source for `python -c`: import `entrypoint`'s dependencies, then wait for its settings.

    The container's code is copied into its working directory after the spare started, so the import
    system's cached listing of that directory is dropped first: that listing is only refreshed when the
    directory's modification time changes, and a copied tree may carry the very same time (the copy takes
    its source's times, and file systems stamp times in coarse steps).
    """
    return f"""
import importlib, json, os, runpy, sys
import {entrypoint}
# Only its imports stay cached: the module itself runs afresh as __main__ below.
del sys.modules["{entrypoint}"]
line = sys.stdin.readline()
if line:
    spec = json.loads(line)
    os.environ.update(spec["env"])
    os.chdir(spec["cwd"])
    sys.path[0] = spec["cwd"]
    importlib.invalidate_caches()
    sys.argv = ["{entrypoint}"]
    runpy.run_module("{entrypoint}", run_name="__main__", alter_sys=True)
"""


# What a spare of the client's own container entrypoint runs.
SPARE_PROGRAM = spare_program()
