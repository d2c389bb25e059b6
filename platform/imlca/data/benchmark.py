"""`load_benchmark`: a registered dataset, capped per class, with its seeded class order and task split."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imlca.config import DataConfig
from imlca.data.base import ImageSet, View, first_per_class
from imlca.data.splits import IncrementalSplit, class_order, validation_split
from imlca.errors import ConfigError, DataError
from imlca.registries import BENCHMARKS, BenchmarkSpec, resolve


class _Subset(ImageSet):
    def __init__(self, images: ImageSet, keep: np.ndarray):
        self.images, self.keep, self.labels = images, keep, images.labels[keep]

    def load(self, index: int):
        return self.images.load(int(self.keep[index]))

    def verify(self) -> None:
        self.images.verify()


@dataclass
class Benchmark:
    spec: BenchmarkSpec
    train: ImageSet
    test: ImageSet
    split: IncrementalSplit
    val: ImageSet | None = None  # carved from train when data.val_fraction > 0

    @property
    def num_classes(self) -> int:
        return len(self.split.order)

    def view(self, part: str, tasks: range | list[int], transform) -> View:
        """Samples of `tasks` from the `train`, `val` or `test` part, labelled with class-order positions."""
        images: ImageSet | None = getattr(self, part)
        if images is None:
            raise ValueError(f"this benchmark has no '{part}' part (set data.val_fraction > 0 for one)")
        idx = np.concatenate([self.split.task_indices(images.labels, t) for t in tasks])
        idx.sort()
        return View(images, idx, self.split.positions(images.labels[idx]), transform)


def _task_sizes(spec: BenchmarkSpec, cfg: DataConfig, num_classes: int) -> tuple[int, ...]:
    sizes = tuple(cfg.task_sizes) if cfg.task_sizes is not None else spec.task_sizes
    if not sizes:
        raise ConfigError("data.task_sizes", f"benchmark '{spec.name}' has no fixed split; set it, e.g. "
                          f"[{num_classes // 2}, {num_classes - num_classes // 2}]")
    if sum(sizes) != num_classes:
        raise ConfigError("data.task_sizes", f"{list(sizes)} sums to {sum(sizes)} but '{spec.name}' has "
                          f"{num_classes} classes; make the sizes add up to {num_classes}")
    return sizes


def _fetched(cfg: DataConfig):
    """(train, test) fetched ready-decoded from the bucket (`data.remote_decoded`), or None: read the JPEGs."""
    if not cfg.remote_decoded:
        return None
    from imlca.data.remote_decoded import fetch_decoded  # pyarrow only where a bucket is read

    return fetch_decoded(cfg)


def load_benchmark(cfg: DataConfig, seed: int) -> Benchmark:
    spec = BENCHMARKS[cfg.benchmark]
    train, test = _fetched(cfg) or resolve(spec.target)(cfg)
    num_classes = spec.num_classes or int(max(train.labels.max(), test.labels.max())) + 1
    for part, images in (("train", train), ("test", test)):
        missing = sorted(set(range(num_classes)) - set(np.unique(images.labels).tolist()))
        if missing:
            raise DataError(f"benchmark '{spec.name}': the {part} split has no images of classes {missing[:5]}; "
                            "check the dataset copy under the data root")
    train = _Subset(train, first_per_class(train.labels, cfg.train_per_class))
    test = _Subset(test, first_per_class(test.labels, cfg.test_per_class))
    split = IncrementalSplit(class_order(num_classes, seed), _task_sizes(spec, cfg, num_classes))
    if cfg.val_fraction == 0:
        return Benchmark(spec, train, test, split)
    keep, held_out = validation_split(train.labels, cfg.val_fraction, seed)
    return Benchmark(spec, _Subset(train, keep), test, split, _Subset(train, held_out))
