"""TaskOutput: what one task's fine-tuning hands to the merge side (plain tensors; no model code needed to read it)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

Tensors = dict[str, torch.Tensor]


@dataclass
class TaskOutput:
    task: int
    adapter: Tensors  # the task's fine-tuned adapter, in the merge space
    head: torch.Tensor  # [n_t, D] the new head after training
    statistics: Tensors  # GaussianBank.state_dict() of the new classes (float64 sufficient statistics)
    losses: list[float]  # mean training loss per epoch
