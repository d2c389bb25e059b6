"""`python -m imlca sweep`: check everything that can be checked, run the Tuner, print the best trial."""
from __future__ import annotations

import os

from imlca.engine.runner import preflight
from imlca.orchestration.cluster import check_gpus, ensure_ray
from imlca.orchestration.storage import check_storage
from imlca.orchestration.tune_sweep import experiment_path, fit, trial_config
from imlca.orchestration.mlflow_callback import MlflowSweepCallback
from imlca.config.sweep import Sweep
from imlca.tracking.store import check_reachable, resolve_uri


def sweep_params(sweep: Sweep) -> dict:
    params = {f"space.{k}": v for k, v in sweep.cfg.space.items()}
    params.update({f"set.{k}": v for k, v in sweep.cfg.set.items()})
    params.update(num_samples=sweep.cfg.num_samples, metric=sweep.cfg.metric, scheduler=sweep.cfg.scheduler.type)
    return params


def launch_sweep(sweep: Sweep, resume: bool = False) -> int:
    base = trial_config(sweep.base_tree, {})
    uri = resolve_uri(base.tracking.uri)
    check_reachable(uri)  # before any trial starts
    preflight(base)
    ensure_ray()
    check_storage(sweep.cfg.storage_path)  # a folder only this node sees fails at the first checkpoint otherwise
    check_gpus(base)

    def make_callbacks(named: Sweep) -> list:
        return [MlflowSweepCallback(uri, base.tracking.experiment, named.name, sweep_params(sweep), sweep.base_tree,
                                    experiment_path(named))]

    # task checkpoints of short trials trip Tune's snapshot-frequency warning; the snapshots are wanted
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    grid = fit(sweep, make_callbacks, resume)
    for error in grid.errors:
        print(f"trial failed: {str(error).splitlines()[0]}")
    best = grid.get_best_result(metric=sweep.cfg.metric, mode=sweep.cfg.mode, scope="last")
    if best is None or best.metrics is None:
        print("no trial finished")
        return 1
    settings = ", ".join(f"{k}={v}" for k, v in best.config.items()) or "(base config)"
    print(f"best trial: {settings}: {sweep.cfg.metric}={best.metrics[sweep.cfg.metric]:.2f}")
    print(f"{len(grid)} trials tracked in MLflow experiment '{base.tracking.experiment}' at {uri}")
    print("open the results side by side: make ui   (http://127.0.0.1:5000)")
    return 1 if grid.errors else 0
