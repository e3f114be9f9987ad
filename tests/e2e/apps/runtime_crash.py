"""Containers that die mid-input: exit, SIGKILL, segfault; and a crash that a retry gets past."""

import os

import modal

app = modal.App("onshore-test-runtime-crash")


@app.function()
def die_exit() -> str:
    os._exit(1)


@app.function()
def die_kill() -> str:
    os.kill(os.getpid(), 9)
    return "unreachable"


@app.function()
def die_segv() -> str:
    import ctypes

    ctypes.string_at(0)
    return "unreachable"


@app.function(retries=2)
def crash_once(marker: str) -> str:
    attempts = int(open(marker).read()) if os.path.exists(marker) else 0
    with open(marker, "w") as f:
        f.write(str(attempts + 1))
    if attempts == 0:
        os._exit(3)
    return f"succeeded on attempt {attempts + 1}"


@app.local_entrypoint()
def main(which: str, marker: str = "") -> None:
    fn = {"exit": die_exit, "kill": die_kill, "segv": die_segv, "once": crash_once}[which]
    try:
        value = fn.remote(marker) if which == "once" else fn.remote()
    except Exception as exc:
        print(f"ERROR {type(exc).__module__}.{type(exc).__name__}: {exc}")
    else:
        print(f"RESULT {value}")
