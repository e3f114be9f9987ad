"""The main example runs end to end through the real `modal run`."""

from pathlib import Path

from tests.conftest import REPO, ServerProcess, run_modal


def test_hello_world_example(server: ServerProcess) -> None:
    result = run_modal(server, "run", str(REPO / "examples" / "hello_world.py"))
    assert result.returncode == 0, result.output
    assert "square(7) = 49" in result.output
    assert "squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in result.output
    # Container stdout streams back to `modal run`.
    assert "square(3) running in a container" in result.output


def test_server_writes_server_file(server: ServerProcess) -> None:
    assert (Path(server.data_dir) / "server.json").exists()
