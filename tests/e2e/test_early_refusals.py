"""What Onshore does not support yet is refused before the app's images are built, not after the build."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import ServerProcess, run_modal, wait_for, write_app

WEB_APP = """
import modal

image = modal.Image.debian_slim().run_commands("sleep 120")
app = modal.App("onshore-test-early-refusal-web", image=image)


@app.function()
@modal.fastapi_endpoint(custom_domains=["web.example.com"])
def page() -> str:
    return "hello"


@app.cls()
class Pages:
    @modal.method()
    def plain(self) -> int:
        return 1

    @modal.fastapi_endpoint(custom_domains=["pages.example.com"])
    def web(self) -> str:
        return "hello"
"""


def test_custom_domains_are_refused_before_the_image_builds(server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(tmp_path, "web_app.py", WEB_APP)
    started = time.monotonic()
    result = run_modal(server, "deploy", str(app), timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode != 0, result.output
    error = result.output[result.output.find("Error") :]
    assert "custom_domains=" in error and "use label=" in error, result.output
    assert elapsed < 30, (elapsed, result.output)
    # The image's slow step never started: not streamed to the client, not built by the server.
    assert "sleep 120" not in result.output, result.output
    assert "sleep 120" not in server.log_text(), server.log_text()


NFS_APP = """
import modal

image = modal.Image.debian_slim().run_commands("sleep 121")
app = modal.App("onshore-test-early-refusal-nfs", image=image)
nfs = modal.NetworkFileSystem.from_name("onshore-test-early-refusal", create_if_missing=True)


@app.function(network_file_systems={"/data": nfs})
def f() -> int:
    return 1


@app.local_entrypoint()
def main() -> None:
    print("RESULT", f.remote())
"""


def test_a_refused_network_file_system_leaves_no_build_running(server: ServerProcess, tmp_path: Path) -> None:
    """The client hears of the network file system at once and gives up; the server does not build for an app
    that failed (it builds nothing once the app stopped, and abandons a build the app started)."""
    app = write_app(tmp_path, "nfs_app.py", NFS_APP)
    started = time.monotonic()
    result = run_modal(server, "run", str(app), timeout=60)
    assert result.returncode != 0 and time.monotonic() - started < 30, result.output
    assert "network file system" in result.output[result.output.find("Error") :].lower(), result.output

    time.sleep(1.0)  # the client has exited: every request it made has reached the server

    def settled() -> bool:
        log = server.log_text()
        return "sleep 121" not in log or "abandoned: the app that asked for it" in log

    assert wait_for(settled, 10.0), server.log_text()
