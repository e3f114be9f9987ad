"""A deployed app whose calls must outlive a server restart."""

import os
import time

import modal

app = modal.App("onshore-test-state")


@app.function()
def square(x: int) -> int:
    return x * x


@app.function(timeout=600)
def slow_first_time(marker: str) -> str:
    """Records each attempt; the first waits (the server stops under it), later ones finish at once."""
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(marker) as f:
        attempt = len(f.read().split())
    if attempt == 1:
        time.sleep(120)
    return f"finished on attempt {attempt}"
