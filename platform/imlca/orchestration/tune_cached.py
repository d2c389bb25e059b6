"""Tune trials on the trajectory cache: one fine-tuning per distinct trajectory, every align_space value per trial.

A trial takes its backbone trajectory from the cache (or trains it once, in a Ray task on its worker bundle, while
concurrent trials needing the same one wait: `RayClaims`), then replays each alignment variant on it task by task
(merge, align, score cached features) and reports after every task. With `align_space`, the report holds every
variant's own report under `variants` (each becomes its own MLflow run) and, at the top level, the report of the
variant best on the sweep metric so far, so Tune's searchers and schedulers see one trial.
"""
from __future__ import annotations

import math

import torch
from ray import tune

from imlca.config import ExperimentConfig, from_dict, merge_trees
from imlca.engine.trajectory import Replay
from imlca.engine.trajectory_cache import TrajectoryCache, obtain
from imlca.orchestration.trajectory_claims import RayClaims, compute_on_worker


def variant_name(variant: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in variant.items()) or "base"


def grouped_result(reports: dict[str, dict], variants: dict[str, dict], metric: str, mode: str,
                   cached: bool) -> dict:
    """The best variant's report (by `metric`, `mode`) at the top level; with more than the base variant, every
    variant's params and report under `variants`."""
    pick = max if mode == "max" else min
    best = pick(reports, key=lambda name: reports[name][metric])
    result = {**reports[best], "trajectory_cached": float(cached)}
    if list(variants) != ["base"]:
        result["best_variant"] = best
        result["variants"] = {name: {"params": variants[name], "metrics": reports[name]} for name in reports}
    return result


def cached_trainable(params: dict, base_tree: dict, variants: list[dict], cache_uri: str, metric: str,
                     mode: str) -> None:
    cfg = from_dict(ExperimentConfig, merge_trees(base_tree, params))
    torch.set_num_threads(max(1, math.floor(cfg.resources.num_cpus)))  # alignment here: the worker's share
    trajectory, cached = obtain(cfg, TrajectoryCache(cache_uri), compute_on_worker, RayClaims())
    named = {variant_name(v): v for v in variants}
    runs = {name: Replay(from_dict(ExperimentConfig, merge_trees(base_tree, {**params, **v})), trajectory)
            for name, v in named.items()}
    for step in trajectory.steps:
        reports = {name: run.step(step) for name, run in runs.items()}
        tune.report(grouped_result(reports, named, metric, mode, cached))
