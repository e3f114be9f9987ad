"""An image with a pip_install layer, which the process runtime cannot build yet."""

import modal

app = modal.App("onshore-test-runtime-refuse-pip")
image = modal.Image.debian_slim().pip_install("six")


@app.function(image=image)
def f() -> int:
    return 1


@app.local_entrypoint()
def main() -> None:
    print("RESULT", f.remote())
