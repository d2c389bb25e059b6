"""Continual-learning metrics on the lower-triangular accuracy matrix a[t][j] (percent; DESIGN §1 Metrics).

a[t][j] is the accuracy after task t on task j's test classes, defined for j ≤ t.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

AccuracyMatrix = Sequence[Sequence[float]] | Tensor


def _rows(acc: AccuracyMatrix) -> list[list[float]]:
    # Row t keeps its first t + 1 entries; the upper triangle of a square tensor is ignored
    if isinstance(acc, Tensor):
        if acc.dim() != 2 or acc.shape[0] != acc.shape[1]:
            raise ValueError(f"accuracy tensor must be square, got {tuple(acc.shape)}")
        acc = acc.tolist()
    if len(acc) == 0:
        raise ValueError("accuracy matrix is empty")
    rows = []
    for t, row in enumerate(acc):
        if len(row) < t + 1:
            raise ValueError(f"accuracy row {t} has {len(row)} entries, needs {t + 1}")
        rows.append([float(v) for v in row[: t + 1]])
    return rows


def _task_averages(rows: list[list[float]]) -> list[float]:
    return [sum(row) / len(row) for row in rows]  # A_t = mean_{j≤t} a[t][j]


def average_incremental_accuracy(acc: AccuracyMatrix) -> float:
    """Ā = mean_t A_t."""
    averages = _task_averages(_rows(acc))
    return sum(averages) / len(averages)


def average_incremental_accuracy_weighted(acc: AccuracyMatrix, counts: Sequence[int]) -> float:
    """LAMDA-PILOT's Ā: mean over steps t of the sample-weighted accuracy on every seen class,
    Σ_j n_j·a[t][j] / Σ_j n_j, with n_j = `counts[j]` test samples of task j (equals Ā on balanced splits)."""
    rows = _rows(acc)
    if len(counts) < len(rows) or min(counts[: len(rows)], default=1) < 1:
        raise ValueError(f"counts {list(counts)} must give >= 1 sample for each of the {len(rows)} tasks")
    steps = [sum(n * a for n, a in zip(counts, row)) / sum(counts[: len(row)]) for row in rows]
    return sum(steps) / len(steps)


def task_counts(targets: Tensor, task_bounds: list[tuple[int, int]]) -> list[int]:
    """Samples per task: targets (class positions) [N] in each [lo, hi)."""
    return [int(((targets >= lo) & (targets < hi)).sum()) for lo, hi in task_bounds]


def last_accuracy(acc: AccuracyMatrix) -> float:
    """A_T, the average accuracy after the last task."""
    return _task_averages(_rows(acc))[-1]


def forgetting(acc: AccuracyMatrix) -> float:
    """This platform's: mean over j < T of (max_{j≤t<T} a[t][j] − a[T][j]), the drop from the best accuracy a task
    had before the last one (negative where a task ends better than it ever was); 0.0 after a single task."""
    return _mean_drop(_rows(acc), include_last=False)


def forgetting_authors(acc: AccuracyMatrix) -> float:
    """The authors' (`compute_metrics` in their helper.py, "FFM"): mean over j < T of (max_{j≤t≤T} a[t][j] − a[T][j]);
    the maximum includes the last row, so no task counts below 0. 0.0 after a single task."""
    return _mean_drop(_rows(acc), include_last=True)


def _mean_drop(rows: list[list[float]], include_last: bool) -> float:
    last = len(rows) - 1
    if last == 0:
        return 0.0
    end = last + 1 if include_last else last
    drops = [max(rows[t][j] for t in range(j, end)) - rows[last][j] for j in range(last)]
    return sum(drops) / len(drops)


def summary(acc: AccuracyMatrix) -> dict[str, float]:
    return {"avg_acc": average_incremental_accuracy(acc), "last_acc": last_accuracy(acc), "forgetting": forgetting(acc),
            "forgetting_authors": forgetting_authors(acc)}


def task_accuracies(predictions: Tensor, targets: Tensor, task_bounds: list[tuple[int, int]]) -> list[float]:
    """Accuracy (percent) over the samples whose target (a class-order position) lies in each [lo, hi)."""
    if predictions.shape != targets.shape or predictions.dim() != 1:
        raise ValueError(f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} must be [N]")
    correct = predictions == targets  # [N]
    result = []
    for lo, hi in task_bounds:
        in_task = (targets >= lo) & (targets < hi)  # [N]
        n = int(in_task.sum())
        if n == 0:
            raise ValueError(f"no samples with targets in [{lo}, {hi})")
        result.append(100.0 * int((correct & in_task).sum()) / n)
    return result


def predict(features: Tensor, heads: Sequence[Tensor]) -> Tensor:
    """Class positions [N]: argmax over all seen classes of features [N, D] @ cat(heads)ᵀ [D, C]."""
    weight = torch.cat(list(heads)).to(features)
    return (features @ weight.T).argmax(dim=1)


# --- robustness: percentages over numpy predictions ------------------------------------------------------------

def top1(predictions: np.ndarray, targets: np.ndarray) -> float:
    return 100.0 * float(np.mean(predictions == targets))


def flip_rate(predictions: np.ndarray, first_frame: bool) -> float:
    """Percent of frame pairs whose predictions differ, averaged over sequences; predictions [N, T], T ≥ 2.

    Pairs are (t−1, t) for t = 1..T−1, or (0, t) where `first_frame`. Every sequence has T−1 pairs, so the mean
    of the per-sequence fractions is the mean over all pairs.
    """
    reference = predictions[:, :1] if first_frame else predictions[:, :-1]  # [N, 1] or [N, T−1]
    return 100.0 * float(np.mean(predictions[:, 1:] != reference))
