"""Core pinning's rules: which core a container gets, and when it needs every core."""

from __future__ import annotations

import pytest

from onshore.runtimes.process.affinity import CorePinning, least_used, needs_more_cores


@pytest.mark.parametrize(
    ("cores", "pinned", "expected"),
    [
        pytest.param([0, 1], [], 1, id="the-last-core-first"),
        pytest.param([0, 1], [1], 0, id="then-the-other"),
        pytest.param([0, 1], [1, 0], 1, id="round-again"),
        pytest.param([0, 1, 2, 3], [3, 2, 2, 1], 0, id="fewest-pinned"),
        pytest.param([2, 5], [5, 5], 2, id="any-core-numbers"),
    ],
)
def test_least_used(cores: list[int], pinned: list[int], expected: int) -> None:
    assert least_used(cores, pinned) == expected


@pytest.mark.parametrize(
    ("waited_ms", "window_s", "expected"),
    [(0, 1.0, False), (150, 1.0, False), (250, 1.0, True), (250, 2.0, False), (900, 1.0, True)],
)
def test_needs_more_cores_after_waiting_a_fifth_of_the_window(
    waited_ms: int, window_s: float, expected: bool
) -> None:
    assert needs_more_cores(waited_ms * 1_000_000, window_s) is expected


def test_one_core_means_no_pinning() -> None:
    pinning = CorePinning(cores=[0])
    assert not pinning.enabled
    pinning.pin("ta-1", 1)  # nothing to pin to: a no-op, not an error
    assert pinning.pinned_core("ta-1") is None
