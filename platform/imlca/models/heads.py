"""The growing multi-head classifier: one bias-free Linear(D, n_t) per task, logits concatenated in task order."""
from __future__ import annotations

import torch
from torch import nn


def init_head(num_classes: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """[n, D] trunc-normal(std 0.02) drawn from `generator` (the reference's head init)."""
    return nn.init.trunc_normal_(torch.empty(num_classes, dim), std=0.02, generator=generator)


class IncrementalClassifier(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.heads = nn.ParameterList()  # head t: [n_t, D]

    def add_head(self, num_classes: int, generator: torch.Generator) -> nn.Parameter:
        """New head, trunc-normal(std 0.02) drawn from `generator`; earlier heads are frozen."""
        for head in self.heads:
            head.requires_grad_(False)
        self.heads.append(nn.Parameter(init_head(num_classes, self.dim, generator).to(self._device())))
        return self.heads[-1]

    def _device(self) -> torch.device:
        return self.heads[0].device if len(self.heads) else torch.device("cpu")

    @property
    def weight(self) -> torch.Tensor:
        """[C_seen, D]: all heads stacked, row c = class at position c."""
        return torch.cat(list(self.heads), dim=0)

    def set_heads(self, weights: list[torch.Tensor]) -> None:
        """Replace all heads (frozen) by `weights` ([n_t, D] each)."""
        self.heads = nn.ParameterList(nn.Parameter(w.detach().clone().to(self._device()), requires_grad=False)
                                      for w in weights)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.T  # [B, D] → [B, C_seen]
