"""`merge`: one running merge step (incremental_merge) vs one `torch.where` pass over the same tensors.

Sizes are a ViT-B/16 with LoRA r=64 on the 12 fused qkv Linears (DESIGN §1): the `factors` space holds A [64, 768]
and B [2304, 64] per layer (2.36 M floats, 9.4 MB), the `delta` space the dense ΔW [2304, 768] per layer
(21.2 M floats, 85 MB). The reference selects per element with `torch.where(|a| >= |b|, a, b)`, one pass.
"""
from __future__ import annotations

import torch

from imlca.bench.measure import Measurement, Settings, divide, rounds, wall
from imlca.core.merging import incremental_merge
from imlca.registries import MERGE_RULES

RULES = ("ties", "max_abs")
RANK, DIM, QKV = 64, 768, 3 * 768


def adapter(space: str, layers: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random float32 adapter dict with the platform's key names."""
    if space == "delta":
        return {f"delta.blocks.{i}.attn.qkv": torch.randn(QKV, DIM, generator=generator) for i in range(layers)}
    tensors = {}
    for i in range(layers):
        tensors[f"blocks.{i}.attn.qkv.lora_A.weight"] = torch.randn(RANK, DIM, generator=generator)  # [r, in]
        tensors[f"blocks.{i}.attn.qkv.lora_B.weight"] = torch.randn(QKV, RANK, generator=generator)  # [out, r]
    return tensors


def where_pass(previous: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.where(p.abs() >= current[k].abs(), p, current[k]) for k, p in previous.items()}


def measure_space(space: str, layers: int, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds of the where pass and of each rule's incremental_merge; their ratios."""
    gen = torch.Generator().manual_seed(0)
    theta0, merged_prev, theta_t = (adapter(space, layers, gen) for _ in range(3))
    candidates = [wall(f"{space}/where", lambda: where_pass(merged_prev, theta_t))]
    for rule in RULES:
        candidates.append(wall(f"{space}/{rule}",
                               lambda rule=rule: incremental_merge(theta0, merged_prev, theta_t, MERGE_RULES.load(rule), 1.0)))
    timings = rounds(candidates, repeats)
    ratios = {f"{space}/{rule}": divide(timings[f"{space}/{rule}"], timings[f"{space}/where"]) for rule in RULES}
    return timings, ratios


def bench_merge(settings: Settings) -> Measurement:
    layers, repeats = (2, 7) if settings.quick else (12, 7)
    timings, ratios = {}, {}
    for space in ("factors", "delta"):
        space_timings, space_ratios = measure_space(space, layers, repeats)
        timings.update(space_timings)
        ratios.update(space_ratios)
    sizes = {"factors": layers * (RANK * DIM + QKV * RANK) * 4, "delta": layers * QKV * DIM * 4}  # float32
    details = {"layers": layers, "repeats": repeats, "bytes_per_adapter": sizes, "threads": torch.get_num_threads(),
               "reference": "torch.where(|prev| >= |curr|, prev, curr) per key, one pass over two adapters "
                            "(the merge also reads θ0)"}
    note = (f"{layers} qkv layers of ViT-B/16 r=64 (factors {sizes['factors'] / 1e6:.1f} MB, ΔW "
            f"{sizes['delta'] / 1e6:.1f} MB per adapter); the worst of the 4 ratios is held to the goal")
    return Measurement(max(ratios.values()), timings, ratios, details=details, note=note)
