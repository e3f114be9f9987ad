"""GPU models: Modal's type names, what each has, and the NVML names that map to them."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Modal's GPU types and each one's memory in MiB (an "A100" is Modal's 40 GB one; "H100!" asks for an H100
# and nothing else).
CATALOG: dict[str, int] = {
    "T4": 16 * 1024,
    "L4": 24 * 1024,
    "A10": 24 * 1024,
    "A10G": 24 * 1024,
    "L40S": 48 * 1024,
    "A100-40GB": 40 * 1024,
    "A100-80GB": 80 * 1024,
    "H100": 80 * 1024,
    "H200": 141 * 1024,
    "B200": 180 * 1024,
    "RTX-PRO-6000": 96 * 1024,
}
ALIASES = {"A100": "A100-40GB", "H100!": "H100"}
ANY = "ANY"


def canonical(gpu_type: str) -> str:
    """A request's type as the catalog names it ("a100" -> "A100-40GB"); unknown names upper-cased."""
    upper = gpu_type.strip().upper()
    return ALIASES.get(upper, upper)


def known(gpu_type: str) -> bool:
    return gpu_type == ANY or canonical(gpu_type) in CATALOG


def from_nvml_name(name: str, memory_mb: int) -> str:
    """The Modal type of a GPU as NVML names it ("NVIDIA H100 80GB HBM3" -> "H100")."""
    text = name.upper().replace("NVIDIA", "").replace("TESLA", "").strip()
    if "A100" in text:
        return "A100-80GB" if memory_mb > 60 * 1024 or "80GB" in text else "A100-40GB"
    for model in ("H200", "H100", "B200", "L40S", "A10G", "T4", "L4"):
        if re.search(rf"(^|[^A-Z0-9]){model}($|[^A-Z0-9])", text):
            return model
    if re.search(r"(^|[^A-Z0-9])A10($|[^A-Z0-9])", text):
        return "A10"
    if "RTX PRO 6000" in text:
        return "RTX-PRO-6000"
    return re.sub(r"\s+", "-", text) or "GPU"


@dataclass(frozen=True)
class EmulatedSpec:
    gpu_type: str
    count: int


def parse_emulated(text: str) -> list[EmulatedSpec]:
    """`onshore server --gpus "T4:1,H100:2"`: the emulated inventory; ValueError naming the bad part."""
    out: list[EmulatedSpec] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, count_text = part.partition(":")
        gpu_type = canonical(name)
        if gpu_type not in CATALOG:
            raise ValueError(f"--gpus: unknown GPU type {name!r}; known types: {', '.join(CATALOG)}")
        try:
            count = int(count_text) if count_text else 1
        except ValueError:
            raise ValueError(f"--gpus: {part!r}: the count after ':' must be a whole number") from None
        if count < 1:
            raise ValueError(f"--gpus: {part!r}: the count must be at least 1")
        out.append(EmulatedSpec(gpu_type, count))
    if not out:
        raise ValueError('--gpus needs at least one TYPE:COUNT, e.g. --gpus "T4:1,H100:2"')
    return out
