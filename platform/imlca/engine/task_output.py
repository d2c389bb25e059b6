"""TaskOutput: what one task's training hands to the central side (plain tensors; no model code needed to read it)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

Tensors = dict[str, torch.Tensor]


@dataclass
class TaskOutput:
    task: int
    adapter: Tensors  # the task's trained weights: IM's adapter in the merge space, SLCA's whole backbone
    head: torch.Tensor  # the new head after training: [n_t, D] (IM), [n_t, D + 1] with the bias last (SLCA)
    statistics: Tensors  # GaussianBank.state_dict() of the new classes (float64 sufficient statistics)
    losses: list[float]  # mean training loss per epoch
