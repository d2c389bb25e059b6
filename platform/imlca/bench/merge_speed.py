"""`merge`: one running merge step (incremental_merge) vs one `torch.where` pass over the same tensors.

Sizes are a ViT-B/16 with LoRA r=64 on the 12 fused qkv Linears (DESIGN §1): the `factors` space holds A [64, 768]
and B [2304, 64] per layer (2.36 M floats, 9.4 MB), the `delta` space the dense ΔW [2304, 768] per layer
(21.2 M floats, 85 MB). The reference selects per element with `torch.where(|a| >= |b|, a, b)`, one pass.
"""
from __future__ import annotations

import statistics

import torch

from imlca.bench.measure import (Measurement, Samples, Seconds, Settings, divide, medians, per_round, rounds,
                                 wall)
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


def measure_space(space: str, layers: int, repeats: int) -> Samples:
    """Seconds of the where pass and of each rule's incremental_merge, per round."""
    gen = torch.Generator().manual_seed(0)
    theta0, merged_prev, theta_t = (adapter(space, layers, gen) for _ in range(3))
    candidates = [wall(f"{space}/where", lambda: where_pass(merged_prev, theta_t))]
    for rule in RULES:
        merge = MERGE_RULES.load(rule)
        candidates.append(wall(f"{space}/{rule}",
                               lambda merge=merge: incremental_merge(theta0, merged_prev, theta_t, merge, 1.0)))
    return rounds(candidates, repeats)


def case_ratio(times: Seconds, case: str) -> float:
    """A "space/rule" case's seconds over its space's where pass, in one round."""
    return divide(times[case], times[f"{case.split('/')[0]}/where"])


def merge_figures(samples: Samples) -> tuple[list[float], dict[str, float]]:
    """Per round, the worst case's ratio (the figure held to the goal); per case, the median of its ratios."""
    cases = [name for name in samples if not name.endswith("/where")]
    figures = per_round(samples, lambda times: max(case_ratio(times, case) for case in cases))
    ratios = {case: statistics.median(per_round(samples, lambda times, case=case: case_ratio(times, case)))
              for case in cases}
    return figures, ratios


def bench_merge(settings: Settings) -> Measurement:
    layers, repeats = (2, 7) if settings.quick else (12, 7)
    samples: Samples = {}
    for space in ("factors", "delta"):  # the two spaces' rounds are paired by index: round i of each
        samples.update(measure_space(space, layers, repeats))
    figures, ratios = merge_figures(samples)
    sizes = {"factors": layers * (RANK * DIM + QKV * RANK) * 4, "delta": layers * QKV * DIM * 4}  # float32
    details = {"layers": layers, "repeats": repeats, "bytes_per_adapter": sizes, "threads": torch.get_num_threads(),
               "reference": "torch.where(|prev| >= |curr|, prev, curr) per key, one pass over two adapters "
                            "(the merge also reads θ0)"}
    note = (f"{layers} qkv layers of ViT-B/16 r=64 (factors {sizes['factors'] / 1e6:.1f} MB, ΔW "
            f"{sizes['delta'] / 1e6:.1f} MB per adapter); each round's worst of the 4 ratios is held to the goal")
    return Measurement(figures, medians(samples), ratios, details=details, note=note)
