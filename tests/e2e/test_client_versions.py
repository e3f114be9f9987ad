"""Containers run the modal client version the app was launched with, not the server's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, write_app

OTHER_VERSION = "1.6.3"


@pytest.mark.slow
def test_container_gets_the_launching_clients_version(fresh_server: ServerProcess, tmp_path: Path) -> None:
    probe = [sys.executable, "-c", "import modal; print(modal.__version__)"]
    installed = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
    assert installed != OTHER_VERSION, "pick an OTHER_VERSION different from the server's client"
    venv = tmp_path / "client-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"modal=={OTHER_VERSION}"],
        check=True,
        timeout=600,
    )
    server = fresh_server.start()
    app = write_app(
        tmp_path,
        "which_client.py",
        """
        import modal

        app = modal.App("e2e-client-version")

        @app.function()
        def container_client_version() -> str:
            return modal.__version__

        @app.local_entrypoint()
        def main() -> None:
            print("LOCAL", modal.__version__)
            print("CONTAINER", container_client_version.remote())
        """,
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "modal", "run", str(app)],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"LOCAL {OTHER_VERSION}" in output
    assert f"CONTAINER {OTHER_VERSION}" in output
    # The environment is built once and kept in the data dir for the next container.
    assert (server.data_dir / "envs" / f"modal-{OTHER_VERSION}" / ".ready").exists()
