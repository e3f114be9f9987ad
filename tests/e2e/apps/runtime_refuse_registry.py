"""An image from a registry base (micromamba): the process runtime cannot run it on the host's system."""

import modal

app = modal.App("onshore-test-runtime-refuse-registry")
image = modal.Image.micromamba()


@app.function(image=image)
def f() -> int:
    return 1


@app.local_entrypoint()
def main() -> None:
    print("RESULT", f.remote())
