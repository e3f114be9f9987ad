"""Server-side retries of map inputs: the client sees each input's final result once, in every map style."""

from __future__ import annotations

from tests.conftest import REPO, ServerProcess, results, run_modal

APP = REPO / "tests" / "e2e" / "apps" / "functions_retries.py"


def test_retried_map_inputs_finish_in_every_map_style(server: ServerProcess) -> None:
    # A map whose inputs are retried by the server never finished when the retried output carried the
    # server's attempt count: the client drops outputs whose retry_count differs from its own.
    result = run_modal(server, "run", str(APP), timeout=120)
    assert result.returncode == 0, result.output
    out = results(result)["retries"]
    assert out["map"] == [0, 2, 4, 6, 8]
    assert out["starmap"] == [3, 7]
    assert out["for_each"] == "finished"
    assert out["spawn_map_iter"] == [0, 2, 4, 6]
    assert out["spawn_map_get"] == 4
    assert out["spawn_map_num_inputs"] == 4
    # Retries that run out end with the last attempt's error, one per input.
    assert out["exhausted"] == [f"ValueError: never {i}" for i in range(3)]
    assert "too early for" in result.output  # the first attempts really failed
