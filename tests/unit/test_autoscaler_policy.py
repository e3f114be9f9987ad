"""The autoscaler's pure policy: desired containers from demand, concurrency, buffers, bounds, scaledown."""

from __future__ import annotations

import pytest

from onshore.loops.autoscaler import Sample, desired_containers
from onshore.models import FunctionSpec


def spec(**kwargs: int | float) -> FunctionSpec:
    return FunctionSpec(tag="f", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sample", "settings", "expected"),
    [
        # (queued, running, containers, idle_expired), spec settings -> desired
        pytest.param(Sample(0, 0, 0, 0), {}, 0, id="nothing-to-do-scales-to-zero"),
        pytest.param(Sample(3, 0, 0, 0), {}, 3, id="one-container-per-queued-input"),
        pytest.param(Sample(1, 2, 2, 0), {}, 3, id="running-inputs-count-too"),
        pytest.param(Sample(3, 0, 0, 0), {"max_concurrent_inputs": 2}, 2, id="concurrency-rounds-up"),
        pytest.param(Sample(0, 4, 1, 0), {"max_concurrent_inputs": 4}, 1, id="one-full-concurrent-container"),
        pytest.param(Sample(2, 0, 0, 0), {"max_concurrent_inputs": 0}, 2, id="zero-concurrency-means-one"),
        pytest.param(
            Sample(10, 0, 0, 0),
            {"max_concurrent_inputs": 10, "target_concurrent_inputs": 4},
            3,
            id="sized-for-target-inputs-not-max",
        ),
        pytest.param(
            Sample(0, 10, 1, 0),
            {"max_concurrent_inputs": 10, "target_concurrent_inputs": 5},
            2,
            id="a-container-over-its-target-gets-company",
        ),
        pytest.param(Sample(8, 0, 0, 0), {"batch_max_size": 4}, 2, id="a-container-per-batch"),
        pytest.param(Sample(1, 0, 0, 0), {"buffer_containers": 2}, 3, id="buffer-on-top-of-demand"),
        pytest.param(Sample(0, 0, 0, 0), {"buffer_containers": 2}, 0, id="no-buffer-without-demand"),
        pytest.param(Sample(0, 0, 0, 0), {"min_containers": 2}, 2, id="min-containers-kept-warm"),
        pytest.param(Sample(1, 0, 0, 0), {"min_containers": 3}, 3, id="min-above-demand"),
        pytest.param(Sample(5, 0, 0, 0), {"max_containers": 2}, 2, id="max-containers-caps-demand"),
        pytest.param(
            Sample(1, 0, 0, 0), {"max_containers": 2, "buffer_containers": 5}, 2, id="max-caps-buffer"
        ),
        pytest.param(Sample(0, 0, 0, 0), {"min_containers": 3, "max_containers": 2}, 2, id="max-caps-min"),
        pytest.param(Sample(0, 0, 3, 0), {}, 3, id="idle-inside-window-stay"),
        pytest.param(Sample(0, 0, 3, 1), {}, 2, id="expired-idle-container-goes"),
        pytest.param(Sample(0, 0, 3, 3), {}, 0, id="all-expired-scale-to-zero"),
        pytest.param(Sample(0, 0, 3, 3), {"min_containers": 1}, 1, id="expired-but-min-keeps-one"),
        pytest.param(Sample(1, 0, 3, 3), {}, 1, id="demand-keeps-what-it-needs"),
        pytest.param(Sample(0, 1, 4, 2), {}, 2, id="busy-and-warm-stay"),
        pytest.param(Sample(10, 0, 2, 0), {"max_containers": 0}, 10, id="max-zero-means-unlimited"),
    ],
)
def test_desired_containers(sample: Sample, settings: dict[str, int], expected: int) -> None:
    assert desired_containers(sample, spec(**settings)) == expected


def test_desired_containers_is_pure() -> None:
    s, f = Sample(2, 1, 1, 0), spec(max_concurrent_inputs=2, buffer_containers=1)
    assert [desired_containers(s, f) for _ in range(3)] == [3, 3, 3]
    assert s == Sample(2, 1, 1, 0)
    assert f == spec(max_concurrent_inputs=2, buffer_containers=1)
