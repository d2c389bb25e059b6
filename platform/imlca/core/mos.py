"""MOS's arithmetic (Sun et al., AAAI 2025; sun-hailong/AAAI25-MOS models/mos.py, backbone/vit_mos.py).

The head is one linear layer over every class of the benchmark, carried across tasks: [C, D + 1], the bias last
(their `nn.Linear(768, nb_classes)` inside the backbone); a task's logits use its first `seen` rows. Features are
the raw CLS outputs after the final norm ([B, D], not normalised).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from imlca.core.gaussian_bank import GaussianBank
from imlca.core.slca import affine_logits, fit_head


def masked_logits(features: Tensor, head: Tensor, known: int, seen: int) -> Tensor:
    """[B, D], [C, D + 1] → [B, seen]: the first `seen` classes' logits, the `known` old ones at −inf
    (models/mos.py l.163–164)."""
    logits = affine_logits(features, head[:seen])
    return logits.masked_fill(torch.arange(seen, device=logits.device) < known, float("-inf"))


def orth_loss(features: Tensor, old_means: Tensor | None, reg: float, temperature: float) -> Tensor:
    """reg · CE(M Mᵀ / τ, identity targets), M = [old class means; batch features] [K + B, D] (models/mos.py
    l.335–355): each row is pushed away from every other one; without old means M is the batch alone."""
    rows = features if old_means is None or len(old_means) == 0 else torch.cat([old_means.to(features), features])
    similarity = rows @ rows.T / temperature
    return reg * F.cross_entropy(similarity, torch.arange(len(rows), device=rows.device))


def pulled(value: Tensor, mean: Tensor, momentum: float, times: int) -> Tensor:
    """`times` pulls value ← (1 − m)·value + m·mean with a fixed mean, in closed form: (1 − m)ⁿ·value +
    (1 − (1 − m)ⁿ)·mean (backbone/vit_mos.py `reweight_adapter` l.328–346, applied n times)."""
    keep = (1 - momentum) ** times
    return keep * value + (1 - keep) * mean


def retrieve(head_logits: Tensor, start: Tensor, class_task: Tensor, rounds: int) -> Tensor:
    """Self-refined retrieval (models/mos.py `_eval_cnn` l.376–396). head_logits [B, S, C]: the head's logits of
    each image under adapter s; start [B]: the first adapter tried; class_task [C]: each class's task. A round
    reads the logits under the current adapter; where their argmax's task is that adapter, or after `rounds`
    rounds, those logits are final; otherwise the next round tries that task's adapter → [B, C]."""
    rows = torch.arange(head_logits.shape[0], device=head_logits.device)
    current, active = start.clone(), torch.ones_like(start, dtype=torch.bool)
    final = torch.empty_like(head_logits[:, 0])
    for round_ in range(1, rounds + 1):
        logits = head_logits[rows, current]  # [B, C]
        task = class_task[logits.argmax(dim=1)]
        stop = active & ((task == current) | (round_ >= rounds))
        final[stop] = logits[stop]
        active &= ~stop
        current = torch.where(active, task, current)
    return final


def ensemble(head_logits: Tensor, prototype_logits: Tensor, task: int) -> Tensor:
    """softmax(head) + softmax(prototype logits · (t + 1)) (models/mos.py l.398–401, written as their division)."""
    return F.softmax(head_logits, dim=1) + F.softmax(prototype_logits / (1 / (task + 1)), dim=1)


def align_head(head: Tensor, draw: Callable[[], tuple[Tensor, Tensor]], seen: int, batch: int, epochs: int,
               lr: float, momentum: float, weight_decay: float) -> tuple[Tensor, list[float]]:
    """MOS's classifier alignment (models/mos.py `classifer_align` l.247–333) → (head, mean loss per epoch).

    Each epoch `draw()` gives shuffled features [seen·batch, D] and labels; `seen` minibatches of `batch` train the
    whole head (SGD with momentum and weight decay, cosine over the epochs) with cross-entropy on the first `seen`
    logits; the rows of unseen classes only decay, as theirs. The input is untouched."""
    param = head.detach().clone().requires_grad_(True)

    def batches():  # `seen` minibatches of `batch` from this epoch's draw
        features, labels = draw()
        return ((features[s:s + batch], labels[s:s + batch]) for s in range(0, seen * batch, batch))

    history = fit_head(param, epochs, lr, momentum, weight_decay, batches,
                       lambda p, z, y: F.cross_entropy(affine_logits(z.to(p), p)[:, :seen], y))
    return param.detach(), history


def sample_bank(bank: GaussianBank, classes: list[int], n_per_class: int, generator: torch.Generator,
                diagonal: bool) -> tuple[Tensor, Tensor]:
    """n_per_class draws per class from N(μ_c, Σ_c + ridge·I), or with `diagonal` from N(μ_c, diag(Σ_c + ridge·I))
    (models/mos.py l.263–273: `variance` keeps only the diagonal) → features float32 [K·n, D], labels [K·n]."""
    if not diagonal:
        return bank.sample(classes, n_per_class, generator)
    out = torch.empty(len(classes) * n_per_class, bank.dim)
    for k, c in enumerate(classes):
        eps = torch.randn(n_per_class, bank.dim, generator=generator, dtype=torch.float64)
        out[k * n_per_class:(k + 1) * n_per_class] = bank.mean(c) + eps * bank.covariance(c).diagonal().sqrt()
    return out, torch.tensor(classes, dtype=torch.int64).repeat_interleave(n_per_class)


def snapshot_means(sets: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """[{}, mean(s_0), mean(s_0, s_1), ...]: the mean of the snapshots before each, from the running sums
    S_k = s_k + S_{k−1} as the authors keep them (backbone/vit_mos.py `sum_adapter_param` l.315–326)."""
    means, total = [{}], None
    for k, snapshot in enumerate(sets[:-1]):
        total = dict(snapshot) if total is None else {key: v + total[key] for key, v in snapshot.items()}
        means.append({key: v / (k + 1) for key, v in total.items()})
    return means
