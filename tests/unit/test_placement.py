"""Placement against a node's CPUs, memory and GPUs: exact models first, substitutes, waits and refusals."""

from __future__ import annotations

import pytest

from onshore.models import GpuChoice, GpuRequest
from onshore.runtimes.base import GpuDevice, Resources
from onshore.runtimes.gpu_inventory import emulated_gpus, visible_devices
from onshore.runtimes.gpu_types import from_nvml_name, parse_emulated
from onshore.scheduling.placement import Ledger, Request


def gpus(*choices: str) -> GpuRequest:
    out = []
    for c in choices:
        name, _, count = c.partition(":")
        out.append(GpuChoice(name.upper(), int(count or 1)))
    return GpuRequest(out)


def node(spec: str = "T4:1,H100:2", cpus: float = 8, memory_mb: int = 16384) -> Resources:
    return Resources(cpus, memory_mb, emulated_gpus(spec) if spec else ())


# (inventory, request, GPUs busy before, expected models placed | "wait" | "never")
CASES = [
    ("T4:1,H100:2", ("T4",), [], ["T4"]),
    ("T4:1,H100:2", ("H100:2",), [], ["H100", "H100"]),
    ("T4:1,H100:2", ("H100",), [1], ["H100"]),  # the free one of the two
    ("T4:1,H100:2", ("H100",), [1, 2], "wait"),  # the server has H100s: wait for one, no substitute
    ("T4:1,H100:2", ("H100:3",), [], "never"),
    ("T4:1,H100:2", ("A100-80GB",), [], ["H100"]),  # absent: the closest with at least 80 GB
    ("T4:1,H100:2", ("A100",), [], ["H100"]),  # an A100 is Modal's 40 GB one
    ("T4:1,H100:2", ("L4",), [], ["H100"]),  # 24 GB: a T4 (16 GB) is too small
    ("T4:1,H100:2", ("B200",), [], "never"),  # 180 GB: nothing here has that much
    ("T4:1,H100:2", ("H100!",), [], ["H100"]),
    ("T4:1,H200:1", ("H100!",), [], "never"),  # "!": that model and no other
    ("T4:1,H200:1", ("H100",), [], ["H200"]),
    ("T4:1,H100:2", ("A100", "T4"), [], ["T4"]),  # a fallback list: an exact match before a substitute
    ("T4:1,H100:2", ("H100", "T4"), [1, 2], ["T4"]),  # the first choice busy: the next one
    ("T4:1,H100:2", ("ANY",), [], ["T4"]),  # any: the smallest that is free
    ("T4:1,H100:2", ("ANY",), [0], ["H100"]),
    ("T4:1,H100:2", ("ANY:3",), [], ["T4", "H100", "H100"]),
    ("", ("T4",), [], "never"),  # no GPUs at all
]


@pytest.mark.parametrize(("inventory", "choices", "busy", "expected"), CASES)
def test_gpu_placement(inventory: str, choices: tuple[str, ...], busy: list[int], expected: object) -> None:
    ledger = Ledger([node(inventory)])
    ledger.nodes[0].gpus_in_use.update(busy)
    request = Request(1, 128, gpus(*choices))
    placed = ledger.fit(request)
    if expected == "never":
        assert placed is None and ledger.never(request)
        return
    if expected == "wait":
        assert placed is None and ledger.never(request) == ""
        return
    assert placed is not None
    assert [g.model for g in placed.gpus] == expected
    assert not {g.index for g in placed.gpus} & set(busy)


def test_strict_mode_refuses_what_the_closest_mode_substitutes() -> None:
    request = Request(1, 128, gpus("A100-80GB"))
    closest, strict = Ledger([node()]), Ledger([node()], strict_gpus=True)
    placed = closest.fit(request)
    assert placed is not None and "A100-80GB" in placed.substituted and "H100" in placed.substituted
    assert strict.fit(request) is None
    assert "1 x T4, 2 x H100 (emulated)" in strict.never(request)
    exact = closest.fit(Request(1, 128, gpus("T4")))
    assert exact is not None and exact.substituted == ""


def test_gpus_are_exclusive_until_released() -> None:
    ledger = Ledger([node()])
    request = Request(1, 128, gpus("H100"))
    first, second = ledger.place(request), ledger.place(request)
    assert first is not None and second is not None
    assert {g.index for g in first.gpus}.isdisjoint(g.index for g in second.gpus)
    assert ledger.place(request) is None  # both taken: the third waits
    ledger.release(first)
    third = ledger.place(request)
    assert third is not None and third.gpus == first.gpus


@pytest.mark.parametrize(
    ("request_", "placed", "expected"),
    [
        (Request(2, 1024), 3, True),  # 3 x 2 CPUs of 8: a fourth fits
        (Request(2, 1024), 4, False),  # 8 of 8 reserved: it waits
        (Request(1, 8192), 1, True),
        (Request(1, 8192), 2, False),  # 16 GiB of 16 reserved
        (Request(9, 128), 0, "never"),  # more CPUs than the node has
        (Request(1, 20000), 0, "never"),
    ],
)
def test_cpu_and_memory_are_counted(request_: Request, placed: int, expected: object) -> None:
    ledger = Ledger([node("")])
    for _ in range(placed):
        assert ledger.place(request_) is not None
    if expected == "never":
        why = ledger.never(request_)
        assert "8 CPUs, 16384 MiB of memory and no GPUs" in why
        return
    assert (ledger.fit(request_) is not None) is expected


def test_an_unknown_node_counts_only_gpus() -> None:
    ledger = Ledger([])  # e.g. a docker engine that did not say what it has
    assert all(ledger.place(Request(64, 1 << 20)) is not None for _ in range(5))
    assert ledger.never(Request(1, 128, gpus("T4")))  # but it has no GPUs


def test_unknown_gpu_types_are_named() -> None:
    why = Ledger([node()]).never(Request(1, 128, gpus("V100X")))
    assert "unknown GPU type 'V100X'" in why and "H100" in why


@pytest.mark.parametrize(
    ("name", "memory", "model"),
    [
        ("Tesla T4", 15360, "T4"),
        ("NVIDIA H100 80GB HBM3", 81559, "H100"),
        ("NVIDIA H100 PCIe", 81559, "H100"),
        ("NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"),
        ("NVIDIA A100-SXM4-40GB", 40960, "A100-40GB"),
        ("NVIDIA A10G", 23028, "A10G"),
        ("NVIDIA L4", 23034, "L4"),
        ("NVIDIA L40S", 46068, "L40S"),
        ("NVIDIA H200", 143771, "H200"),
        ("NVIDIA GeForce RTX 4090", 24564, "GEFORCE-RTX-4090"),
    ],
)
def test_nvml_names_map_to_modal_types(name: str, memory: int, model: str) -> None:
    assert from_nvml_name(name, memory) == model


def test_emulated_inventory_and_visible_devices() -> None:
    devices = emulated_gpus("t4:1, H100:2")
    assert [(g.index, g.model) for g in devices] == [(0, "T4"), (1, "H100"), (2, "H100")]
    assert visible_devices(list(devices[1:])) == "1,2"
    real = [GpuDevice(3, "H100", 81559, uuid="GPU-abc")]
    assert visible_devices(real) == "GPU-abc"  # right whatever numbering a sandbox's view of them has
    for bad, message in [
        ("T4:x", "whole number"),
        ("V100X:1", "unknown GPU type"),
        ("T4:0", "at least 1"),
        ("", "at least one"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_emulated(bad)
