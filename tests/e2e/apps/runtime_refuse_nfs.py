"""A function with a NetworkFileSystem mount, which is not supported (Volumes are)."""

import modal

app = modal.App("onshore-test-runtime-refuse-nfs")
nfs = modal.NetworkFileSystem.from_name("onshore-test-runtime-nfs", create_if_missing=True)


@app.function(network_file_systems={"/data": nfs})
def f() -> int:
    return 1


@app.local_entrypoint()
def main() -> None:
    print("RESULT", f.remote())
