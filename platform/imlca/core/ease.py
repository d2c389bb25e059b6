"""EASE's classifier arithmetic (Zhou et al., CVPR 2024; their models/ease.py and backbone/linears.py).

Features and prototypes live in S subspaces of width D, concatenated: [N, S·D]. Subspace 0 is the plain
pre-trained model when `pretrained` (p = 1), then one per task's adapter set: adapter j is block j + p.
A task's raw prototypes [n_i, (i + 1 + p)·D] are the class means of its training images in every subspace that
existed when it was learnt; `complete` fills the newer subspaces, `reweighted_logits` scores all classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_logits(features: Tensor, weight: Tensor, sigma: Tensor | float = 1.0) -> Tensor:
    """σ·cos(f, w): [B, D], [C, D] → [B, C] (their EaseCosineLinear, the proxy head while training)."""
    return sigma * (F.normalize(features, dim=1) @ F.normalize(weight, dim=1).T)


def _block(matrix: Tensor, k: int, dim: int) -> Tensor:
    return matrix[:, k * dim:(k + 1) * dim]


def complete(raw: list[Tensor], dim: int, pretrained: bool) -> Tensor:
    """The semantic-guided prototype complement (`solve_sim_reset`), recomputed from the raw prototypes each
    task → the full prototype matrix [C, (t + 1 + p)·D].

    For the classes c of task i and each newer adapter j (i < j ≤ t): reference classes R = those of tasks
    j..t (real in subspaces i and j); S = softmax over R of cos(P_i[c], P_i[r]); P_j[c] = Σ_r S[c, r]·P_j[r].
    Only real prototypes enter, so the order of the pairs does not matter."""
    p, t = int(pretrained), len(raw) - 1
    sizes = [len(r) for r in raw]
    starts = [sum(sizes[:i]) for i in range(t + 2)]
    full = raw[0].new_zeros(starts[-1], (t + 1 + p) * dim)
    for i, block in enumerate(raw):
        full[starts[i]:starts[i + 1], :block.shape[1]] = block
    completed = full.clone()
    for i in range(t):
        own = _block(full[starts[i]:starts[i + 1]], i + p, dim)  # [n_i, D]: task i's classes in subspace i
        for j in range(i + 1, t + 1):
            ref = full[starts[j]:]  # the classes of tasks j..t
            similarity = torch.softmax(F.normalize(own, dim=1) @ F.normalize(_block(ref, i + p, dim), dim=1).T, 1)
            completed[starts[i]:starts[i + 1], (j + p) * dim:(j + p + 1) * dim] = similarity @ _block(ref, j + p, dim)
    return completed


def subspace_weights(sizes: list[int], alpha: float, beta: float, pretrained: bool) -> Tensor:
    """[S, C]: the weight of subspace k's cosine logit for class c (`forward_reweight`): 1 on the class's own
    adapter, α/t on the others (t the current task index), β on the pre-trained subspace."""
    p, t = int(pretrained), len(sizes) - 1
    weights = torch.zeros(t + 1 + p, sum(sizes), dtype=torch.float64)
    start = 0
    for i, n in enumerate(sizes):
        column = torch.full((t + 1,), alpha / t if t > 0 else 0.0, dtype=torch.float64)
        column[i] = 1.0
        weights[p:, start:start + n] = column[:, None]
        if pretrained:
            weights[0, start:start + n] = beta
        start += n
    return weights


def reweighted_logits(features: Tensor, prototypes: Tensor, sizes: list[int], alpha: float, beta: float,
                      pretrained: bool) -> Tensor:
    """[B, S·D] features, [C, S·D] completed prototypes → [B, C]: Σ_k w[k, c]·cos(f_k, P_k[c]) (σ = 1: their
    main classifier's σ is never trained)."""
    weights = subspace_weights(sizes, alpha, beta, pretrained).to(features)
    dim = features.shape[1] // weights.shape[0]
    logits = features.new_zeros(features.shape[0], prototypes.shape[0])
    for k in range(weights.shape[0]):
        logits += cosine_logits(_block(features, k, dim), _block(prototypes, k, dim)) * weights[k]
    return logits


def class_means(features: Tensor, targets: Tensor, classes: range) -> Tensor:
    """[N, D], [N] → [len(classes), D]: the mean feature of each class, in `classes` order."""
    return torch.stack([features[targets == c].mean(dim=0) for c in classes])
