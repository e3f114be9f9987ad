"""A function that asks for a GPU, run on a server that has none."""

import modal

app = modal.App("onshore-test-runtime-refuse-gpu")


@app.function(gpu="any")
def f() -> int:
    return 1


@app.local_entrypoint()
def main() -> None:
    print("RESULT", f.remote())
