"""Local Classifier Alignment: the LCA loss and the head-alignment loop on Gaussian samples (DESIGN §1 step 4)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from imlca.core.gaussian_bank import GaussianBank


def _nearest_mean(features: Tensor, class_means: Tensor) -> Tensor:
    # torch.cdist's default (matmul-based for larger batches), as the reference code computes it
    return torch.cdist(features.detach(), class_means.to(features)).argmin(dim=1)  # [B, C] -> [B]


def _class_sums(values: Tensor, cls: Tensor, k: int) -> Tensor:
    return values.new_zeros(k).index_add(0, cls, values)  # [B] -> [K], summed per present class


def _class_terms(ce: Tensor, targets: Tensor, features: Tensor, class_means: Tensor) -> tuple[Tensor, Tensor]:
    """Per present class: term 1 (mean ℓ over the local region S) and term 2 (mean |ℓ_j − ℓ_k| over S), [K] each."""
    present, cls = torch.unique(targets, return_inverse=True)  # [K], [B] index of each sample's class
    k = present.shape[0]
    inside = _nearest_mean(features, class_means) == targets  # [B]: sample lies in its class's local region
    n_inside = _class_sums(inside.to(ce.dtype), cls, k)  # |S| [K]
    # Term 1 averages ℓ over S, or over the whole class where S is empty
    used = inside | (n_inside[cls] == 0)  # [B]
    term1 = _class_sums(ce * used, cls, k) / _class_sums(used.to(ce.dtype), cls, k)  # [K]
    # Term 2: mean |ℓ_j − ℓ_k| over ordered pairs j ≠ k in S (the diagonal adds |0| = 0)
    pairs = inside[:, None] & inside[None, :] & (cls[:, None] == cls[None, :])  # [B, B]
    spread = ((ce[:, None] - ce[None, :]).abs() * pairs).sum(dim=1)  # [B]
    n_pairs = (n_inside * (n_inside - 1)).clamp(min=1)  # [K]; |S| < 2 has no pair and a zero sum
    return term1, _class_sums(spread, cls, k) / n_pairs


def lca_loss_terms(logits: Tensor, targets: Tensor, features: Tensor, class_means: Tensor,
                   lam: float) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, cross-entropy term, local-robustness term): the loss optimised (DESIGN §1 step 4; with lam == 0 the
    plain mean cross-entropy, classifier alignment) and its two terms averaged over the present classes, detached.

    The terms are computed for every λ (for λ = 0 without a gradient), so CA and LCA runs log the same quantities.
    """
    ce = F.cross_entropy(logits, targets, reduction="none")  # ℓ [B]
    if lam == 0:
        with torch.no_grad():
            term1, term2 = _class_terms(ce.detach(), targets, features, class_means)
        return F.cross_entropy(logits, targets), term1.mean(), term2.mean()
    term1, term2 = _class_terms(ce, targets, features, class_means)
    loss = (term1 + lam * term2).sum() / term1.shape[0]
    return loss, term1.detach().mean(), term2.detach().mean()


def lca_loss(logits: Tensor, targets: Tensor, features: Tensor, class_means: Tensor, lam: float) -> Tensor:
    """The LCA loss of DESIGN §1 step 4; with lam == 0 the plain mean cross-entropy (classifier alignment)."""
    if lam == 0:
        return F.cross_entropy(logits, targets)
    return lca_loss_terms(logits, targets, features, class_means, lam)[0]


def _sgd(param: Tensor, lr: float, momentum: float, weight_decay: float, epochs: int):
    optimizer = torch.optim.SGD([param], lr=lr, momentum=momentum, weight_decay=weight_decay)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0.0)


def align_heads(
    weight: Tensor,
    bank: GaussianBank,
    classes: list[int],
    lam: float,
    samples_per_class: int,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    generator: torch.Generator,
) -> tuple[Tensor, dict[str, list[float]]]:
    """Align the concatenated head matrix (row c = class at position c) on Gaussian samples of every class.

    Returns the new weight (same dtype and device, the input untouched) and, per epoch, the mean over batches of
    the loss (`loss`) and of its two terms (`ce`, `spread`; see `lca_loss_terms`).
    """
    if weight.dim() != 2 or weight.shape[0] != len(classes):
        raise ValueError(f"weight {tuple(weight.shape)} must be [C, D] with C = len(classes) = {len(classes)}")
    device = weight.device
    features, _ = bank.sample(classes, samples_per_class, generator)  # [C·n, D], drawn once
    features = features.to(device)
    targets = torch.arange(len(classes), device=device).repeat_interleave(samples_per_class)  # positions [C·n]
    means = bank.means(classes).to(device)  # [C, D]
    param = weight.detach().to(torch.float32, copy=True).requires_grad_(True)  # [C, D]
    optimizer, schedule = _sgd(param, lr, momentum, weight_decay, epochs)
    history: dict[str, list[float]] = {"loss": [], "ce": [], "spread": []}
    for _ in range(epochs):
        order = torch.randperm(features.shape[0], generator=generator).to(device)
        batches: dict[str, list[float]] = {name: [] for name in history}
        for start in range(0, order.shape[0], batch_size):
            idx = order[start : start + batch_size]
            z, y = features[idx], targets[idx]  # [b, D], [b]
            loss, ce, spread = lca_loss_terms(z @ param.T, y, z, means, lam)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for name, value in zip(history, (loss, ce, spread)):
                batches[name].append(value.item())
        schedule.step()
        for name, values in batches.items():
            history[name].append(sum(values) / len(values))
    return param.detach().to(weight.dtype), history
