"""The GPUs the planner knows: each family's training throughput and the memory sizes it comes in.

A profile's gpu.model names a family by containing its name (`H100-80GB`, `NVIDIA H100 80GB HBM3`);
the first match wins, so GB200 comes before B200 and GH200 before H200. Any other GPU needs
gpu.achievable_tflops, since a guessed throughput makes every time estimate wrong. gpu.memory_gib must
agree with the size the model names (`A100-80GB`: 80) or, where it names none, with one of the
family's sizes: within MIN_FRACTION..MAX_FRACTION of it, since the GB on the box is more than the GiB
nvidia-smi and torch report (79.1 for an H100 80GB, 44.4 for an L40S 48GB).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from .yamlfile import shown


@dataclass(frozen=True)
class GpuFamily:
    name: str
    tflops: float                 # dense bf16 model TFLOP/s a training step sustains per GPU (fused attention)
    sizes_gb: tuple[int, ...]     # the memory sizes it is sold with


# Throughput from published NeMo Llama-3 8B H100 runs (~40-50% of the dense peak after communication and
# unfused parts), scaled by each family's dense peak; MEASURED on an H200 where benchmarks/RESULTS.md says.
FAMILIES = (GpuFamily("GB200", 900.0, (186, 192)), GpuFamily("B200", 850.0, (180, 192)),
            GpuFamily("GH200", 434.0, (96, 144)), GpuFamily("H200", 434.0, (141,)),
            GpuFamily("H100", 400.0, (80, 94)), GpuFamily("A100", 150.0, (40, 80)),
            GpuFamily("L40", 110.0, (48,)), GpuFamily("A10", 45.0, (24,)), GpuFamily("V100", 50.0, (16, 32)))
MIN_FRACTION, MAX_FRACTION = 0.9, 1.05
_STATED_SIZE = re.compile(r"(?<![0-9A-Za-z.])(\d{2,3})\s*G(?:I?B)?\b", re.I)  # the 80 of A100-80GB; not A10G


def family(model: str) -> Optional[GpuFamily]:
    upper = model.upper()
    return next((f for f in FAMILIES if f.name in upper), None)


def known_names() -> str:
    return ", ".join(f.name for f in FAMILIES)


def memory_problem(model: str, memory_gib: float) -> Optional[tuple[str, str]]:
    """(what is wrong, the fix) when `memory_gib` is not a size GPU `model` comes in; None when it is, or
    when the family is unknown (nothing to compare with)."""
    known = family(model)
    if known is None:
        return None
    stated = _STATED_SIZE.search(model)
    sizes = (int(stated.group(1)),) if stated else known.sizes_gb
    if any(MIN_FRACTION * size <= memory_gib <= MAX_FRACTION * size for size in sizes):
        return None
    closest = min(sizes, key=lambda size: abs(size - memory_gib))
    has = f"{shown(model)} has {sizes[0]}" if stated else f"{known.name} cards have {' or '.join(map(str, sizes))}"
    other = next((s for s in known.sizes_gb if MIN_FRACTION * s <= memory_gib <= MAX_FRACTION * s), None)
    fix = f"write memory_gib: {closest}" + (f", or model: {known.name}-{other}GB if that is the card" if other else "")
    return f"{memory_gib:g} GiB does not match the GPU model: {has} GB", fix
