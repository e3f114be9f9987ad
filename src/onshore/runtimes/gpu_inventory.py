"""This machine's GPUs: read from NVML (nvidia-ml-py), or an emulated inventory declared with --gpus."""

from __future__ import annotations

import glob
import importlib
import logging
import os
from typing import Any

from onshore.runtimes.base import GpuDevice
from onshore.runtimes.gpu_types import CATALOG, from_nvml_name, parse_emulated

log = logging.getLogger("onshore.gpus")


def emulated_gpus(text: str) -> tuple[GpuDevice, ...]:
    """`--gpus "T4:1,H100:2"` as devices numbered from 0; ValueError for a bad spec."""
    devices: list[GpuDevice] = []
    for spec in parse_emulated(text):
        for _ in range(spec.count):
            devices.append(GpuDevice(len(devices), spec.gpu_type, CATALOG[spec.gpu_type], emulated=True))
    return tuple(devices)


def nvml_gpus() -> tuple[tuple[GpuDevice, ...], str]:
    """(the GPUs NVML reports, "") or ((), why there are none)."""
    try:
        nvml: Any = importlib.import_module("pynvml")  # nvidia-ml-py (it ships no type hints)
    except ImportError:
        return (), "nvidia-ml-py is not installed"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded...
        return (), f"NVML is not available here ({exc}): no NVIDIA driver"
    try:
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(nvml.nvmlDeviceGetName(handle))
            memory_mb = int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // (1024 * 1024)
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            minor = int(nvml.nvmlDeviceGetMinorNumber(handle))
            devices.append(GpuDevice(minor, from_nvml_name(name, memory_mb), memory_mb, uuid))
    except Exception as exc:
        return (), f"reading the GPUs from NVML failed: {exc}"
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass
    if not devices:
        return (), "NVML reports no GPUs"
    return tuple(devices), ""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def host_gpus(emulated: str) -> tuple[tuple[GpuDevice, ...], str]:
    """The server's GPUs: the emulated inventory where one is declared, else NVML's; and why none."""
    if emulated:
        return emulated_gpus(emulated), ""
    devices, why = nvml_gpus()
    for device in devices:
        log.info("GPU %d: %s (%d MiB) %s", device.index, device.model, device.memory_mb, device.uuid)
    return devices, why


# What a container with real GPUs needs besides their device nodes: the driver's control nodes, its libraries
# and tools (bound at the same paths), as NVIDIA's container toolkit shows them.
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
DRIVER_PATTERNS = (
    "/usr/lib/x86_64-linux-gnu/libcuda.so*",
    "/usr/lib/x86_64-linux-gnu/libnvidia-*.so*",
    "/usr/lib/x86_64-linux-gnu/libnvcuvid.so*",
    "/usr/lib/aarch64-linux-gnu/libcuda.so*",
    "/usr/lib/aarch64-linux-gnu/libnvidia-*.so*",
    "/usr/lib64/libcuda.so*",
    "/usr/lib64/libnvidia-*.so*",
    "/usr/bin/nvidia-smi",
    "/usr/bin/nvidia-debugdump",
    "/usr/bin/nvidia-persistenced",
)


def device_paths(gpus: list[GpuDevice]) -> list[str]:
    """The device nodes of these (real) GPUs and the driver's control nodes that exist here."""
    real = [g for g in gpus if not g.emulated]
    if not real:
        return []
    nodes = [f"/dev/nvidia{g.index}" for g in real]
    nodes += [f"/dev/{name}" for name in CONTROL_NODES]
    return [p for p in nodes if os.path.exists(p)]


def driver_files() -> list[str]:
    """The host's NVIDIA driver libraries and tools (regular files and the links naming them)."""
    found: set[str] = set()
    for pattern in DRIVER_PATTERNS:
        found.update(p for p in glob.glob(pattern) if os.path.isfile(p))
    return sorted(found)


def visible_devices(gpus: list[GpuDevice]) -> str:
    """CUDA_VISIBLE_DEVICES for a container: real GPUs by UUID (right whatever a sandbox's view numbers them),
    emulated ones by index."""
    return ",".join(g.uuid if g.uuid else str(g.index) for g in gpus)
