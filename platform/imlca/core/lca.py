"""Local Classifier Alignment: the LCA loss and the head-alignment loop on Gaussian samples (DESIGN §1 step 4)."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from imlca.core.gaussian_bank import GaussianBank


def _nearest_mean(features: Tensor, class_means: Tensor) -> Tensor:
    # torch.cdist's default (matmul-based for larger batches), as the reference code computes it
    return torch.cdist(features.detach(), class_means.to(features)).argmin(dim=1)  # [B, C] -> [B]


def _class_sums(values: Tensor, cls: Tensor, k: int) -> Tensor:
    return values.new_zeros(k).index_add(0, cls, values)  # [B] -> [K], summed per present class


def _class_terms(ce: Tensor, targets: Tensor, features: Tensor, class_means: Tensor,
                 entropy: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per present class: term 1 (mean ℓ over the local region S), term 2 (mean |ℓ_j − ℓ_k| over S) and, given
    the per-sample `entropy` [B], term 3 (its mean over S; 0 where S is empty), [K] each."""
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
    term2 = _class_sums(spread, cls, k) / n_pairs
    if entropy is None:
        return term1, term2, None
    return term1, term2, _class_sums(entropy * inside, cls, k) / n_inside.clamp(min=1)  # 0 where S is empty


def normalise_logits(logits: Tensor, task_sizes: list[int], temperature: float) -> Tensor:
    """The authors' logit normalisation (their lca.py `train_ca_logit_norm`): per sample, the mean over the seen
    tasks of the L2 norm of each task's logits (+1e-7) → n; returns logits / (n + 1e-7) / τ, [B, C].
    `task_sizes`: the classes of each task in column order (they sum to C)."""
    parts = logits.split(task_sizes, dim=1)  # [B, n_t] per task
    norms = torch.stack([part.norm(p=2, dim=-1) + 1e-7 for part in parts], dim=1)  # [B, T]
    mean_norm = norms.sum(dim=-1, keepdim=True) / len(task_sizes)  # [B, 1]
    return logits / (mean_norm + 1e-7) / temperature


def entropy(logits: Tensor) -> Tensor:
    """−Σ_c p_c log(p_c + 1e-8) per sample, p = softmax(logits) (the authors' ε), [B, C] → [B]."""
    p = F.softmax(logits, dim=1)
    return -torch.sum(p * torch.log(p + 1e-8), dim=1)


def lca_loss_terms(logits: Tensor, targets: Tensor, features: Tensor, class_means: Tensor, lam: float, *,
                   entropy_weight: float = 0.0, temperature: float | None = None,
                   task_sizes: list[int] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, cross-entropy term, local-robustness term): the loss optimised (DESIGN §1 step 4; with lam == 0 the
    plain mean cross-entropy, classifier alignment) and its two terms averaged over the present classes, detached.

    The authors' optional terms (DESIGN §1b), off by default: `entropy_weight` w adds w·term 3 to each class
    (the mean entropy of softmax(logits) over its local region; also with lam == 0, which then takes the class-wise
    form as theirs does); `temperature` τ computes ℓ on `normalise_logits(logits, task_sizes, τ)`.
    The terms are computed for every λ (for λ = 0 without a gradient), so CA and LCA runs log the same quantities.
    """
    if temperature is not None:
        if task_sizes is None:
            raise ValueError("a logit-norm temperature needs task_sizes (the classes of each seen task)")
        logits_ce = normalise_logits(logits, task_sizes, temperature)
    else:
        logits_ce = logits
    ce = F.cross_entropy(logits_ce, targets, reduction="none")  # ℓ [B]
    if lam == 0 and entropy_weight == 0:
        with torch.no_grad():
            term1, term2, _ = _class_terms(ce.detach(), targets, features, class_means)
        return F.cross_entropy(logits_ce, targets), term1.mean(), term2.mean()
    term1, term2, term3 = _class_terms(ce, targets, features, class_means,
                                       entropy(logits) if entropy_weight != 0 else None)
    per_class = term1 + lam * term2 if term3 is None else term1 + lam * term2 + entropy_weight * term3  # [K]
    loss = per_class.sum() / term1.shape[0]
    return loss, term1.detach().mean(), term2.detach().mean()


def ce_loss_terms(logits: Tensor, targets: Tensor, features: Tensor, class_means: Tensor, lam: float = 0.0,
                  **_: object) -> tuple[Tensor, Tensor, Tensor]:
    """Classifier alignment (SLCA's CA): `lca_loss_terms` with λ = 0 and none of the optional terms, whatever λ and
    options the caller passes (so its loss is the plain mean cross-entropy)."""
    return lca_loss_terms(logits, targets, features, class_means, 0.0)


AlignLoss = Callable[..., "Tensor | tuple[Tensor, Tensor, Tensor]"]  # named in imlca.registries.ALIGN_LOSSES


def lca_loss(logits: Tensor, targets: Tensor, features: Tensor, class_means: Tensor, lam: float, *,
             entropy_weight: float = 0.0, temperature: float | None = None,
             task_sizes: list[int] | None = None) -> Tensor:
    """The LCA loss of DESIGN §1 step 4; with lam == 0 the plain mean cross-entropy (classifier alignment).
    The keyword-only terms are the authors' optional ones (see `lca_loss_terms`), off by default."""
    if lam == 0 and entropy_weight == 0 and temperature is None:
        return F.cross_entropy(logits, targets)
    return lca_loss_terms(logits, targets, features, class_means, lam, entropy_weight=entropy_weight,
                          temperature=temperature, task_sizes=task_sizes)[0]


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
    *,
    task_sizes: list[int] | None = None,
    loss: AlignLoss = lca_loss_terms,
    **options,
) -> tuple[Tensor, dict[str, list[float]]]:
    """Align the concatenated head matrix (row c = class at position c) on Gaussian samples of every class.

    `loss(logits, targets, features, class_means, lam, task_sizes=..., **options)` is a loss of
    `imlca.registries.ALIGN_LOSSES` (default: LCA, whose `options` are `lca_loss_terms`' entropy_weight and
    temperature); it returns the loss, or (loss, cross-entropy term, spread term).
    Returns the new weight (same dtype and device, the input untouched) and, per epoch, the mean over batches of
    the loss (`loss`) and of its two terms (`ce`, `spread`; NaN for a loss that returns none). Every epoch takes
    batches of `batch_size` (the authors' loop with a temperature keeps a short last batch's size for the epochs
    after it; not copied)."""
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
            terms = loss(z @ param.T, y, z, means, lam, task_sizes=task_sizes, **options)
            value, ce, spread = terms if isinstance(terms, tuple) else (terms, None, None)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            for name, term in zip(history, (value, ce, spread)):
                batches[name].append(math.nan if term is None else term.item())
        schedule.step()
        for name, values in batches.items():
            history[name].append(sum(values) / len(values))
    return param.detach().to(weight.dtype), history
