"""SLCA's classifier alignment (Zhang et al., ICCV 2023; their models/slca.py `_stage2_compact_classifier`).

Heads are affine: one [n_t, D + 1] tensor per task, the last column the bias (their `nn.Linear(D, n_t)` per task),
so logits = [z, 1] @ Wᵀ. Alignment trains every seen head on features drawn from the Gaussian bank: each epoch
`samples_per_class` per class from N(s_c·μ_c, Σ_c), shuffled and cut into C batches of that size (one pass), SGD
with cosine annealing over the epochs, cross-entropy on logit-normalised logits. The backbone is not involved.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from imlca.core.gaussian_bank import GaussianBank


def affine_logits(features: Tensor, weight: Tensor) -> Tensor:
    """[B, D] features, [C, D + 1] weights (bias last) → [B, C]."""
    return features @ weight[:, :-1].T + weight[:, -1]


def fit_head(param: Tensor, epochs: int, lr: float, momentum: float, weight_decay: float,
             batches: Callable[[], Iterator[tuple[Tensor, Tensor]]],
             loss: Callable[[Tensor, Tensor, Tensor], Tensor]) -> list[float]:
    """Train one head tensor `param` (requires grad) in place: SGD with momentum and weight decay, cosine annealing
    over `epochs`; each epoch `batches()` yields its (features, targets) minibatches and `loss(param, features,
    targets)` is minimised on each (SLCA's and MOS's classifier alignment) → the mean loss per epoch."""
    optimizer = torch.optim.SGD([param], lr=lr, momentum=momentum, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    history = []
    for _ in range(epochs):
        losses = []
        for z, y in batches():
            value = loss(param, z, y)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            losses.append(value.item())
        schedule.step()
        history.append(sum(losses) / len(losses))
    return history


def slca_logit_norm(logits: Tensor, task_sizes: list[int], temperature: float) -> Tensor:
    """Per sample, the L2 norm of each seen task's logit block (+1e-7), averaged over the tasks → n;
    returns logits / n / τ, [B, C]. (LCA's `core.lca.normalise_logits` adds a second 1e-7 to n; SLCA does not.)"""
    norms = torch.stack([block.norm(p=2, dim=-1) + 1e-7 for block in logits.split(task_sizes, dim=1)], dim=1)
    return logits / norms.mean(dim=-1, keepdim=True) / temperature  # [B, T] → [B, 1]


def ca_loss(logits: Tensor, targets: Tensor, task_sizes: list[int], temperature: float | None) -> Tensor:
    """Mean cross-entropy over all seen classes, on logit-normalised logits when `temperature` is set."""
    if temperature is not None:
        logits = slca_logit_norm(logits, task_sizes, temperature)
    return F.cross_entropy(logits, targets)


def mean_shrink(task_of_class: list[int], task: int) -> list[float]:
    """SLCA's per-class mean factor 0.9 + 0.1·(t_c + 1)/(task + 1): older classes' means shrink slightly."""
    return [0.9 + (t + 1) / (task + 1) * 0.1 for t in task_of_class]


def authors_task_ids(num_classes: int, task_size: int) -> list[int]:
    """The task id the authors give class position c: c // (the current task's size), which is the class's task
    only when every task has that size."""
    return [c // task_size for c in range(num_classes)]


def align_slca_heads(weight: Tensor, bank: GaussianBank, task_sizes: list[int], shrink: list[float],
                     samples_per_class: int, epochs: int, lr: float, momentum: float, weight_decay: float,
                     temperature: float | None, generator: torch.Generator) -> tuple[Tensor, list[float]]:
    """Align the concatenated affine heads [C, D + 1] (row c = class position c) → (new weight, mean loss per
    epoch); the input is untouched."""
    classes = list(range(sum(task_sizes)))
    if weight.dim() != 2 or weight.shape[0] != len(classes) or len(shrink) != len(classes):
        raise ValueError(f"weight {tuple(weight.shape)} and shrink ({len(shrink)}) must cover the "
                         f"{len(classes)} seen classes")
    param = weight.detach().to(torch.float32, copy=True).requires_grad_(True)

    def batches() -> Iterator[tuple[Tensor, Tensor]]:  # C batches of samples_per_class: one pass per epoch
        features, targets = bank.sample(classes, samples_per_class, generator, mean_scale=shrink)  # [C·n, D]
        order = torch.randperm(features.shape[0], generator=generator)
        features, targets = features[order], targets[order]
        return ((features[s:s + samples_per_class], targets[s:s + samples_per_class])
                for s in range(0, features.shape[0], samples_per_class))

    history = fit_head(param, epochs, lr, momentum, weight_decay, batches,
                       lambda p, z, y: ca_loss(affine_logits(z, p), y, task_sizes, temperature))
    return param.detach().to(weight.dtype), history
