"""pip_install on a machine whose pip configuration lists several indexes, via the real client and server."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ServerProcess, results, run_modal, write_app
from tests.indexes import simple_index

APP = """
import json

import modal

image = modal.Image.debian_slim().METHOD("tinypkg==1.0")
app = modal.App("onshore-test-image-indexes-METHOD", image=image)


@app.function()
def version() -> str:
    import tinypkg

    return tinypkg.__version__


@app.local_entrypoint()
def main() -> None:
    print("RESULT version", json.dumps(version.remote()))
"""


def test_pip_install_finds_a_version_on_any_configured_index(tmp_path: Path) -> None:
    """pip finds tinypkg 1.0 on the main index although the extra index (which uv asks first) has only 2.0;
    pip_install does too. uv_pip_install keeps uv's rule (the first index that has the package) and fails."""
    older = simple_index(tmp_path / "older", {"tinypkg": ["1.0"]})
    newer = simple_index(tmp_path / "newer", {"tinypkg": ["2.0"]})
    server = ServerProcess(
        tmp_path / "data", server_env={"PIP_INDEX_URL": older, "PIP_EXTRA_INDEX_URL": newer}
    )
    try:
        server.start()
        pip_app = write_app(tmp_path, "pip_app.py", APP.replace("METHOD", "pip_install"))
        result = run_modal(server, "run", str(pip_app), timeout=300)
        assert result.returncode == 0, result.output
        assert results(result)["version"] == "1.0", result.output

        uv_app = write_app(tmp_path, "uv_app.py", APP.replace("METHOD", "uv_pip_install"))
        refused = run_modal(server, "run", str(uv_app), timeout=300)
        assert refused.returncode != 0, refused.output
        assert "tinypkg" in refused.output and "first index" in refused.output, refused.output
    finally:
        server.stop()
