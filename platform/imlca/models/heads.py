"""Classifier heads: one bias-free Linear(D, n_t) weight per task; the heads of a method are concatenated in task
order (MergeState keeps them), so prediction is argmax over features @ cat(heads)ᵀ."""
from __future__ import annotations

import torch
from torch import nn


def init_head(num_classes: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """[n, D] trunc-normal(std 0.02) drawn from `generator` (the reference's head init)."""
    return nn.init.trunc_normal_(torch.empty(num_classes, dim), std=0.02, generator=generator)
