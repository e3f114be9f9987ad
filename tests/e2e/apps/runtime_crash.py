"""Containers that die mid-input: exit, SIGKILL, segfault; and a crash that a retry gets past."""

import os
import time

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


# Containers share no writable files, so the first attempt is told apart by the clock: it starts at once, and
# the retry only after the retry delay (3 s), past `crash_until`.
@app.function(retries=modal.Retries(max_retries=2, initial_delay=3.0, backoff_coefficient=1.0))
def crash_once(crash_until: float) -> str:
    print(f"ATTEMPT {os.environ['MODAL_TASK_ID']}", flush=True)
    if time.time() < crash_until:
        os._exit(3)
    return "succeeded after a crash"


@app.local_entrypoint()
def main(which: str) -> None:
    fn = {"exit": die_exit, "kill": die_kill, "segv": die_segv, "once": crash_once}[which]
    try:
        value = fn.remote(time.time() + 2.5) if which == "once" else fn.remote()
    except Exception as exc:
        print(f"ERROR {type(exc).__module__}.{type(exc).__name__}: {exc}")
    else:
        print(f"RESULT {value}")
