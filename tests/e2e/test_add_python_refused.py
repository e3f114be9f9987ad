"""The process runtime refuses `Image.from_registry(..., add_python=...)` by name: registry images need the
docker runtime, and the python-build-standalone mount is not fetched for nothing."""

from __future__ import annotations

from pathlib import Path

from modal.mount import python_standalone_mount_name

from onshore.api.images import BUILDER_VERSION
from tests.conftest import ServerProcess, run_modal, write_app


def test_add_python_needs_the_docker_runtime(server: ServerProcess, tmp_path: Path) -> None:
    app = write_app(
        tmp_path,
        "add_python_refused.py",
        """
        import modal

        image = modal.Image.from_registry("debian:bookworm-slim", add_python="3.11")
        app = modal.App("onshore-test-add-python-refused", image=image)


        @app.function()
        def f() -> int:
            return 1
        """,
    )
    result = run_modal(server, "run", str(app) + "::f", timeout=120, env=server.env(COLUMNS="2000"))
    assert result.returncode != 0, result.output
    output = " ".join(result.output.split())
    assert f"Mount '{python_standalone_mount_name('3.11', BUILDER_VERSION)}'" in output, result.output
    assert "the process runtime cannot use" in output and "--runtime docker" in output, result.output
    assert not list((server.data_dir / "python-standalone").glob("*")), "fetched on the process runtime"
