"""Server-side retries of map inputs: the client sees each input's final result once, in every map style."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import REPO, ServerProcess, results, run_modal, write_app

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


def test_retries_back_off_as_configured_and_the_logs_count_attempts(
    server: ServerProcess, tmp_path: Path
) -> None:
    app = write_app(
        tmp_path,
        "backoff.py",
        """
        import json
        import time

        import modal

        app = modal.App("e2e-retry-backoff")


        @app.function(retries=modal.Retries(max_retries=3, initial_delay=0.5, backoff_coefficient=2.0))
        def fails(store: modal.Dict) -> None:
            store["times"] = store.get("times", []) + [time.time()]
            raise RuntimeError("still failing")


        @app.local_entrypoint()
        def main() -> None:
            with modal.Dict.ephemeral() as store:
                call = fails.spawn(store)
                try:
                    call.get()
                except RuntimeError as exc:
                    print("ERROR", exc)
                print("RESULT " + json.dumps(store["times"]))
        """,
    )
    result = run_modal(server, "run", str(app), timeout=120)
    assert result.returncode == 0, result.output
    assert "ERROR still failing" in result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("RESULT "))
    times = json.loads(line.removeprefix("RESULT "))
    assert len(times) == 4  # the first attempt and three retries
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    for gap, delay in zip(gaps, [0.5, 1.0, 2.0], strict=True):
        assert delay * 0.95 <= gap < delay + 1.5, gaps  # initial_delay, then doubling
    assert "failed on attempt 1 of 4; retrying in 0.5s" in result.output
    assert "failed after 4 attempts (retries=3)" in result.output
