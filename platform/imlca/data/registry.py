"""Benchmark registry: a name → how to load it, how many classes, and its split into tasks.

A loader takes the `DataConfig` and returns `(train, test)` `ImageSet`s whose labels are the dataset's own class
ids 0..num_classes-1. Class orders and task splits are applied on top (`imlca.data.splits`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from imlca.config import DataConfig
    from imlca.data.base import ImageSet

Loader = Callable[["DataConfig"], "tuple[ImageSet, ImageSet]"]


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    num_classes: int
    task_sizes: tuple[int, ...]  # classes per task, in order; sums to num_classes
    loader: Loader
    description: str = ""


BENCHMARKS: dict[str, BenchmarkSpec] = {}


def register_benchmark(name: str, num_classes: int, task_sizes: tuple[int, ...], description: str = ""):
    """Decorator registering a loader under `name`."""
    if num_classes and sum(task_sizes) != num_classes:  # 0: known only once the data is read (imagefolder)
        raise ValueError(f"benchmark {name}: task sizes {task_sizes} do not sum to {num_classes}")

    def wrap(loader: Loader) -> Loader:
        BENCHMARKS[name] = BenchmarkSpec(name, num_classes, tuple(task_sizes), loader, description)
        return loader

    return wrap
