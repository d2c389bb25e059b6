"""Tune trials on the trajectory cache: one fine-tuning per distinct trajectory, every align_space value per trial.

A trial takes its backbone trajectory from the cache (or trains it once, while concurrent trials needing the same
one wait: `RayClaims`), then replays each alignment variant on it task by task (align, score cached features; one
Gaussian bank read by all variants) and reports after every task. The trial process itself holds the worker's
resources (`trial_resources`) and trains in-process: no second process to start and import torch, timm and peft
in, and with Tune's `reuse_actors` the next trial of the sweep (another seed, say) trains in an already warm
process. With `align_space`, the report holds every variant's own report under `variants` (each becomes its own
MLflow run) and, at the top level, the report of the variant best on the sweep metric so far, so Tune's searchers
and schedulers see one trial.
"""
from __future__ import annotations

import gc
import math

import torch
from ray import tune

from imlca.config import ExperimentConfig, from_dict, merge_trees
from imlca.engine.allocator import return_large_blocks
from imlca.engine.trajectory import Replay, Trajectory, compute_trajectory
from imlca.engine.trajectory_cache import TrajectoryCache, obtain
from imlca.orchestration.trajectory_claims import RayClaims
from imlca.plugins import TRIAL, worker_config


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


def compute_in_trial(cfg: ExperimentConfig) -> Trajectory:
    """The trajectory, fine-tuned in this trial process on the resources its bundle holds (Ray sets the visible
    GPUs); the model and its memory go before the alignments start."""
    try:
        return compute_trajectory(cfg)
    finally:
        gc.collect()
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()


def cached_trainable(params: dict, base_tree: dict, variants: list[dict], cache_uri: str, metric: str,
                     mode: str) -> None:
    cfg = worker_config(merge_trees(base_tree, params), TRIAL)
    torch.set_num_threads(max(1, math.floor(cfg.resources.num_cpus)))  # the CPUs this trial's bundle holds
    trajectory, cached = obtain(cfg, TrajectoryCache(cache_uri), compute_in_trial, RayClaims())
    return_large_blocks()  # from here on this process only aligns: freed banks' temporaries leave its RSS
    named = {variant_name(v): v for v in variants}
    runs = Replay({name: from_dict(ExperimentConfig, merge_trees(base_tree, {**params, **v}))
                   for name, v in named.items()}, trajectory)  # one bank for every variant
    for step in trajectory.steps:
        tune.report(grouped_result(runs.step(step), named, metric, mode, cached))
