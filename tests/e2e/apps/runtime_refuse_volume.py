"""A function with a Volume mount, which is not supported yet."""

import modal

app = modal.App("onshore-test-runtime-refuse-volume")
volume = modal.Volume.from_name("onshore-test-runtime-volume", create_if_missing=True)


@app.function(volumes={"/data": volume})
def f() -> int:
    return 1


@app.local_entrypoint()
def main() -> None:
    print("RESULT", f.remote())
