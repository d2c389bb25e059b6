"""Class-incremental splits: a seeded class order cut into tasks.

Labels inside the model are *positions* in the class order: task t owns positions [start_t, start_t + size_t),
and the concatenated heads' logits follow the same positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def class_order(num_classes: int, seed: int) -> np.ndarray:
    """The reference's order: `np.random.seed(seed); np.random.permutation(num_classes)`."""
    return np.random.RandomState(seed).permutation(num_classes)


@dataclass(frozen=True)
class IncrementalSplit:
    order: np.ndarray  # [num_classes]: order[k] = dataset class id at position k
    task_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if sum(self.task_sizes) != len(self.order):
            raise ValueError(f"task sizes {self.task_sizes} do not cover {len(self.order)} classes")

    @property
    def num_tasks(self) -> int:
        return len(self.task_sizes)

    def task_range(self, task: int) -> tuple[int, int]:
        start = sum(self.task_sizes[:task])
        return start, start + self.task_sizes[task]

    def seen(self, task: int) -> int:
        """Number of classes seen after task `task`."""
        return self.task_range(task)[1]

    def positions(self, labels: np.ndarray) -> np.ndarray:
        """Dataset class ids → positions in the class order."""
        inverse = np.empty_like(self.order)
        inverse[self.order] = np.arange(len(self.order))
        return inverse[np.asarray(labels, dtype=np.int64)]

    def task_indices(self, labels: np.ndarray, task: int) -> np.ndarray:
        """Indices of the samples whose class belongs to task `task`."""
        lo, hi = self.task_range(task)
        pos = self.positions(labels)
        return np.flatnonzero((pos >= lo) & (pos < hi))


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) of `labels`: per class, a seeded round(fraction · n_c) of the samples (at least
    one, and at least one left to train on) go to validation. Both index arrays are sorted (dataset order)."""
    labels = np.asarray(labels)
    val = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n_val = min(max(1, round(fraction * len(members))), len(members) - 1)
        rng = np.random.default_rng([seed, int(cls)])  # one stream per class: a class's split ignores the others
        val.append(members[rng.permutation(len(members))[:n_val]])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    return np.setdiff1d(np.arange(len(labels)), val_idx), val_idx
