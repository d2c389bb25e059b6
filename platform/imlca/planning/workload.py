"""The work of a sweep, counted from its files: trials, tasks, images per epoch, alignments, shared trajectories.

Trials are Tune's: the product of the `space` grids, `num_samples` times (a random key is sized with its first
listed value: what it draws does not change the amount of work, except for keys such as `data.benchmark`). Image
counts come from the data itself when it is readable here, else from the registry's published counts
(`BenchmarkSpec.images`), spread evenly over classes and capped by `train_per_class` / `test_per_class`.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from imlca.config import ExperimentConfig, from_dict, merge_trees, to_dict
from imlca.config.sweep import Sweep
from imlca.errors import DataError, UserError
from imlca.registries import BENCHMARKS, METHODS


@dataclass(frozen=True)
class TaskWork:
    train: int  # training images of this task (seen once per epoch, and once more for its statistics)
    test: int  # test images of tasks 0..t (the evaluation after t)
    val: int  # validation images of tasks 0..t (0 without data.val_fraction)
    classes: int  # classes seen after t (what an alignment fits)


@dataclass
class TrialWork:
    params: dict[str, Any]
    cfg: ExperimentConfig
    tasks: list[TaskWork]
    counts_from: str  # "data" (read here) or "registry" (published counts)
    alignments: int  # alignments after each task t >= 1: aligned methods × align_space variants
    variants: int = 1  # align_space variants (all read one Gaussian bank per align.ridge value)
    banks: int = 1  # Gaussian banks the trial holds: one per align.ridge value of its variants
    trajectory: str | None = None  # the trajectory fingerprint (cached sweeps)
    trains: bool = True  # False: its trajectory is in the cache already, or another trial of the sweep trains it

    @property
    def train_images(self) -> int:
        """Images one epoch sees, summed over tasks."""
        return sum(t.train for t in self.tasks)


@dataclass
class Workload:
    sweep: Sweep
    trials: list[TrialWork]
    random_keys: list[str] = field(default_factory=list)  # space keys that are drawn, sized with one value

    @property
    def trajectories(self) -> int:
        """Backbone trajectories fine-tuned by the sweep."""
        return sum(t.trains for t in self.trials)


def expand(sweep: Sweep) -> list[dict[str, Any]]:
    """Each trial's sampled keys, as Tune's basic generator makes them (grid product × num_samples)."""
    keys = list(sweep.cfg.space)
    values = [next(iter(sweep.cfg.space[k].values())) if "grid" in sweep.cfg.space[k]
              else next(iter(sweep.cfg.space[k].values()))[:1] for k in keys]
    grid = [dict(zip(keys, combo)) for combo in itertools.product(*values)]
    return grid * sweep.cfg.num_samples


def aligned_methods(cfg: ExperimentConfig) -> int:
    if cfg.align.family == "slca":
        return int(cfg.slca.ca_epochs > 0)  # one alignment after each task t >= 1
    if cfg.align.family == "mos":
        return int(cfg.mos.ca_epochs > 0)
    return sum(METHODS[m].loss is not None for m in cfg.align.methods)


@dataclass(frozen=True)
class AlignShape:
    samples_per_class: int
    epochs: int
    batch_size: int
    draws: int  # how often the samples are drawn per alignment (IM once, SLCA every epoch)


def align_shape(cfg: ExperimentConfig) -> AlignShape:
    """The shape of one alignment of the trial's family."""
    if cfg.align.family == "slca":
        s = cfg.slca
        return AlignShape(s.ca_samples_per_class, s.ca_epochs, s.ca_samples_per_class, s.ca_epochs)
    if cfg.align.family == "mos":  # as SLCA's: drawn every epoch, one batch of a class's count per class
        n = cfg.mos.ca_samples_factor * cfg.train.batch_size
        return AlignShape(n, cfg.mos.ca_epochs, n, cfg.mos.ca_epochs)
    a = cfg.align
    return AlignShape(a.samples_per_class, a.epochs, a.batch_size, 1)


_COUNTS: dict[str, tuple[list[TaskWork], str]] = {}


def task_counts(cfg: ExperimentConfig) -> tuple[list[TaskWork], str]:
    """Per task: images and seen classes, from the data when it loads, else from the registry."""
    key = json.dumps([to_dict(cfg.data), cfg.seed], sort_keys=True, default=str)
    if key not in _COUNTS:
        try:
            _COUNTS[key] = (_counts_from_data(cfg), "data")
        except DataError:
            _COUNTS[key] = (_counts_from_registry(cfg), "registry")
    return _COUNTS[key]


def _counts_from_data(cfg: ExperimentConfig) -> list[TaskWork]:
    from imlca.data import load_benchmark

    bench = load_benchmark(cfg.data, cfg.seed)
    split, tasks = bench.split, []

    def seen(images, t: int) -> int:
        return 0 if images is None else sum(len(split.task_indices(images.labels, j)) for j in range(t + 1))

    for t in range(split.num_tasks):
        tasks.append(TaskWork(len(split.task_indices(bench.train.labels, t)), seen(bench.test, t),
                              seen(bench.val, t), split.seen(t)))
    return tasks


def _counts_from_registry(cfg: ExperimentConfig) -> list[TaskWork]:
    spec, data = BENCHMARKS[cfg.data.benchmark], cfg.data
    sizes = list(data.task_sizes or spec.task_sizes)
    if spec.images is None or not sizes:
        raise UserError(f"benchmark '{spec.name}': its data is not readable here and the registry lists no image "
                        "counts; set data.root (or $IMLCA_DATA) to a copy of it so the plan can count its images")
    classes = sum(sizes)
    train = min(spec.images[0] / classes, data.train_per_class or math.inf)  # per class
    test = min(spec.images[1] / classes, data.test_per_class or math.inf)
    val = round(train * data.val_fraction)
    tasks, seen = [], 0
    for size in sizes:
        seen += size
        tasks.append(TaskWork(round(size * (train - val)), round(seen * test), seen * val, seen))
    return tasks


def workload(sweep: Sweep, cached_entries: set[str] | None = None) -> Workload:
    """Every trial's work. `cached_entries`: trajectory fingerprints already in the sweep's cache (cached sweeps)."""
    trials, claimed = [], set()
    variants = max(1, len(sweep.cfg.variants())) if sweep.cfg.cached else 1
    banks = len({v.get("align.ridge") for v in sweep.cfg.variants()}) if sweep.cfg.cached else 1
    for params in expand(sweep):
        cfg = from_dict(ExperimentConfig, merge_trees(sweep.base_tree, params))
        tasks, source = task_counts(cfg)
        trial = TrialWork(params, cfg, tasks, source, aligned_methods(cfg) * variants, variants, banks)
        if sweep.cfg.cached:
            from imlca.engine.trajectory_cache import trajectory_fingerprint

            trial.trajectory = trajectory_fingerprint(cfg)
            trial.trains = trial.trajectory not in (cached_entries or set()) and trial.trajectory not in claimed
            claimed.add(trial.trajectory)
        trials.append(trial)
    random_keys = [k for k, spec in sweep.cfg.space.items() if "grid" not in spec]
    return Workload(sweep, trials, random_keys)
