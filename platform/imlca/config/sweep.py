"""Typed sweep definitions: a base experiment, fixed overrides, a search space over any config key.

```yaml
base: default.yaml            # experiment config, relative to this file
set: {train.epochs: 1}        # applied to every trial
space:                        # one entry per dotted config key
  align.lam: {grid: [0.0, 0.1]}
  lora.rank: {choice: [4, 8]}
  merge.alpha: {uniform: [0.5, 1.5]}
  train.lr: {loguniform: [1.0e-3, 1.0e-1]}
align_space:                  # align.* keys expanded inside each trial: one fine-tuning, every value aligned
  align.lam: {grid: [0.0, 0.1, 1.0]}
```
The space key `case` takes experiment files (relative to the sweep file) instead of values: each is the base of its
trials, so one sweep runs settings that differ in many keys at once (sweeps/paper/table1.yaml: one file per method
family and benchmark). A trial's resources and tracking are the sweep base's, so cases may not change them.
With `align_space` (or `trajectory_cache`), trials take the backbone trajectory from a cache shared by the sweep
(`trajectory_cache`, default `<storage_path>/trajectories`; a folder or s3://...) and compute it only when missing.
Every value a trial can take is checked against the experiment schema before anything starts.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imlca.config import ExperimentConfig, config_path, from_dict, merge_trees, read_config_tree, read_yaml
from imlca.config.loading import CASE, choose, described, flatten, folder_name, require
from imlca.registries import DISTRIBUTIONS, SCHEDULERS, SEARCHERS


@dataclass
class SchedulerConfig:
    type: str = described("none", "asha: stop weak trials early on the per-task metric; none: run every trial")
    grace_period: int = described(2, "tasks a trial runs before it can be stopped")
    reduction_factor: float = described(2.0, "ASHA's reduction factor (the fraction 1/factor of trials goes on)")

    def __post_init__(self) -> None:
        choose(self.type, "type", SCHEDULERS)
        require(self.grace_period >= 1, "grace_period", f"must be >= 1 (got {self.grace_period})")


@dataclass
class SweepConfig:
    base: str = described("default.yaml", "the experiment config every trial starts from (relative to the sweep "
                                          "file, or a bundled name)")
    name: str | None = described(None, "the sweep's name (Tune experiment, MLflow parent run); null: the file's "
                                       "stem")
    set: dict[str, Any] = described(factory=dict, doc="dotted keys fixed for every trial, e.g. {train.epochs: 1}")
    space: dict[str, dict[str, Any]] = described(factory=dict, doc="dotted key → {grid|choice|uniform|loguniform|"
                                                                   "randint: [...]}, the values trials take; "
                                                                   "`case`: a grid of experiment files, each the "
                                                                   "base of its trials")
    align_space: dict[str, dict[str, Any]] = described(factory=dict, doc="grids of align.* keys aligned inside "
                                                                         "each trial on one cached trajectory")
    trajectory_cache: str | None = described(None, "folder or s3:// URI of the trajectory cache; null: "
                                                   "<storage_path>/trajectories when align_space is set")
    confirm_space: dict[str, dict[str, Any]] = described(factory=dict, doc="grids (e.g. seeds) the best setting "
                                                                           "is run over after the search, as the "
                                                                           "sweep <name>-confirm")
    confirm_per: list[str] = described(factory=list, doc="space keys whose every value's best is confirmed (e.g. "
                                                         "[data.benchmark])")
    num_samples: int = described(1, "repeats of the grid; random draws for choice/uniform/loguniform/randint")
    search: str = described("basic", "basic: Tune's grid + random sampling; optuna: TPE (pip install optuna)")
    metric: str = described("avg_acc", "the metric trials are compared on (avg_acc: running Ā of the run's "
                                       "method; val_avg_acc: on validation)")
    mode: str = described("max", "whether the metric is maximised or minimised")
    scheduler: SchedulerConfig = described(factory=SchedulerConfig, doc="early stopping of weak trials")
    max_concurrent_trials: int = described(2, "trials that run at once")
    max_failures: int = described(2, "retries of a failed trial, each from its last task checkpoint")
    storage_path: str | None = described(None, "trial checkpoints and Tune state: s3://bucket/prefix, gs://..., or "
                                               "a folder every node sees; null: $IMLCA_STORAGE, then ./ray_results")

    def __post_init__(self) -> None:
        require(self.num_samples >= 1, "num_samples", f"must be >= 1 (got {self.num_samples})")
        if self.name is not None:
            folder_name(self.name, "name")
        choose(self.search, "search", SEARCHERS)
        require(self.search != "optuna" or not any("grid" in spec for spec in self.space.values()), "search",
                "optuna cannot search a grid; use choice instead of grid")
        choose(self.mode, "mode", ("max", "min"))
        require(self.max_concurrent_trials >= 1, "max_concurrent_trials",
                f"must be >= 1 (got {self.max_concurrent_trials})")
        for key, spec in self.space.items():
            _check_distribution(key, spec)
        for key, spec in self.confirm_space.items():
            _check_distribution(key, spec)
            require(next(iter(spec)) == "grid", f"confirm_space.{key}", "must be a grid, e.g. {grid: [1993, 1994]}")
        for key in self.confirm_per:
            require(key in self.space and bool(self.confirm_space), f"confirm_per.{key}",
                    "must be a key of space, with a confirm_space")
        for key, spec in self.align_space.items():
            _check_distribution(key, spec)
            require(key.startswith("align.") and next(iter(spec)) == "grid", f"align_space.{key}",
                    "only grids of align.* keys can be expanded inside a trial (they leave the backbone trajectory "
                    "unchanged); move it to space")

    @staticmethod
    def prepare_tree(tree: dict) -> None:
        """A bare list of values under a space names no distribution: say which to write before the type check."""
        for section in ("space", "align_space", "confirm_space"):
            specs = tree.get(section)
            for key, spec in specs.items() if isinstance(specs, dict) else ():
                require(not isinstance(spec, list), f"{section}.{key}",
                        f"a bare list names no distribution; write {{grid: {spec}}} to try every value (or "
                        f"{{choice: {spec}}} to sample them)")

    @property
    def cached(self) -> bool:
        """Trials take their trajectory from the cache (and align every align_space value on it)."""
        return bool(self.align_space) or self.trajectory_cache is not None

    def cache_location(self, storage_root: str) -> str:
        """An object-store URI as given; a folder made absolute here (trials run in folders of their own).
        `storage_root`: the sweep's resolved storage (orchestration.storage.storage_root)."""
        location = self.trajectory_cache or f"{storage_root.rstrip('/')}/trajectories"
        return location if "://" in location else str(Path(location).resolve())

    def variants(self) -> list[dict[str, Any]]:
        """Every combination of the align_space grids ([{}] without one)."""
        keys = list(self.align_space)
        grids = [self.align_space[k]["grid"] for k in keys]
        return [dict(zip(keys, combo)) for combo in itertools.product(*grids)]


def _check_distribution(key: str, spec: dict) -> None:
    require(len(spec) == 1 and next(iter(spec)) in DISTRIBUTIONS, f"space.{key}",
            f"give exactly one of {', '.join(DISTRIBUTIONS)}, e.g. {{grid: [0.1, 0.2]}}")
    kind, values = next(iter(spec.items()))
    where = f"space.{key}.{kind}"
    require(isinstance(values, list) and bool(values), where, "must be a non-empty list")
    require(kind not in ("uniform", "loguniform", "randint") or (len(values) == 2 and values[0] < values[1]), where,
            f"must be [low, high] with low < high (got {values})")
    require(kind != "loguniform" or values[0] > 0, where, f"bounds must be > 0 (got {values})")


def candidate_values(spec: dict) -> list:
    """Values to validate: every listed value, or both bounds of a range."""
    return list(next(iter(spec.values())))


@dataclass
class Sweep:
    cfg: SweepConfig
    name: str
    base_tree: dict  # the base experiment with `set` applied

    def validate(self) -> None:
        """Build the experiment config for every listed value (grid points combined) so bad input fails now."""
        keys = list(self.cfg.space)
        grids = [candidate_values(self.cfg.space[k]) for k in keys]
        combos = itertools.product(itertools.product(*grids), self.cfg.variants())
        for combo, variant in itertools.islice(combos, 512):
            cfg = from_dict(ExperimentConfig, merge_trees(self.base_tree, {**dict(zip(keys, combo)), **variant}))
            require(not self.cfg.metric.startswith("val_") or cfg.data.val_fraction > 0,
                    "metric", f"{self.cfg.metric} needs a validation split: set data.val_fraction > 0")
            require(not (self.cfg.cached and cfg.robustness.enabled), "robustness", "a cached trajectory holds "
                    "features, not images; run robustness without align_space / trajectory_cache")
            require(not (self.cfg.cached and cfg.align.family != "im"), "align.method", f"{cfg.align.method} "
                    f"(family {cfg.align.family}) has no IM trajectory to cache; sweep it without align_space / "
                    "trajectory_cache")


def confirmation(sweep: Sweep, best: dict[str, Any], name: str, storage_root: str) -> Sweep:
    """The sweep that runs the `best` settings (dotted keys) over `confirm_space`: a grid, no search, no align_space,
    the same trajectory cache (the searched trajectory is not trained again)."""
    cfg = dataclasses.replace(sweep.cfg, space=sweep.cfg.confirm_space, align_space={}, confirm_space={},
                              confirm_per=[], search="basic", num_samples=1,
                              trajectory_cache=sweep.cfg.cache_location(storage_root) if sweep.cfg.cached else None)
    confirm = Sweep(cfg, name, merge_trees(sweep.base_tree, best))
    confirm.validate()
    return confirm


CASE_FIXED = ("resources.", "tracking.")  # what a trial reserves and where it is recorded: the sweep base's


def case_values(files: list, folder: Path, base_tree: dict, fixed: dict) -> list[dict]:
    """The `case` grid's files as trial values: {"file": name, "set": dotted keys where the file's resolved
    experiment (with the sweep's `set`) differs from the sweep base's}."""
    base = flatten(from_dict(ExperimentConfig, base_tree))
    cases = []
    for name in files:
        require(isinstance(name, str), f"space.{CASE}.grid", f"takes experiment files, e.g. [cub.yaml] (got {name!r})")
        tree = merge_trees(read_config_tree(config_path(name, folder)), fixed)
        case = flatten(from_dict(ExperimentConfig, tree))
        differs = {k: v for k, v in case.items() if base.get(k) != v and k != "name"}
        taken = sorted(k for k in differs if k.startswith(CASE_FIXED))
        for key in taken[:1]:
            require(False, f"space.{CASE}", f"{name} sets {key}, which a trial takes from the sweep's base (the "
                                            "same for every trial); set it there")
        cases.append({"file": name, "set": differs})
    return cases


def load_sweep(path: str | Path) -> Sweep:
    path = config_path(path)  # a bare name may be a bundled sweep, e.g. embedded.yaml
    cfg = from_dict(SweepConfig, read_yaml(path))
    base_path = config_path(cfg.base, path.parent).resolve()
    base_tree = merge_trees(read_config_tree(base_path), cfg.set)
    if CASE in cfg.space:
        require("grid" in cfg.space[CASE], f"space.{CASE}", "must be a grid of experiment files")
        cfg.space[CASE] = {"grid": case_values(cfg.space[CASE]["grid"], path.parent, base_tree, cfg.set)}
    sweep = Sweep(cfg, cfg.name or path.stem, base_tree)
    sweep.validate()
    return sweep
