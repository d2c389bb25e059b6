"""`python -m imlca sweep`: check everything that can be checked, run the Tuner, print the best trial."""
from __future__ import annotations

import os

from imlca.engine.runner import preflight
from imlca.orchestration.cluster import check_gpus, ensure_ray
from imlca.orchestration.storage import check_storage, storage_root
from imlca.orchestration.tune_sweep import experiment_path, fit, trial_config
from imlca.orchestration.mlflow_callback import MlflowSweepCallback
from imlca.config.loading import CASE
from imlca.config.sweep import Sweep, confirmation
from imlca.errors import UserError, without_passwords
from imlca.plugins import PluginError
from imlca.tracking.store import Tracker, check_reachable, resolve_uri, ui_link


def sweep_params(sweep: Sweep) -> dict:
    params = {f"space.{k}": v for k, v in sweep.cfg.space.items() if k != CASE}
    if CASE in sweep.cfg.space:  # its files, not every key they set
        params[f"space.{CASE}"] = [case["file"] for case in sweep.cfg.space[CASE]["grid"]]
    params.update({f"align_space.{k}": v for k, v in sweep.cfg.align_space.items()})
    params.update({f"set.{k}": v for k, v in sweep.cfg.set.items()})
    params.update(num_samples=sweep.cfg.num_samples, metric=sweep.cfg.metric, scheduler=sweep.cfg.scheduler.type)
    return params


def experiment_id(uri: str, base) -> str:
    return Tracker(uri, base.tracking.experiment).experiment_id


def chosen_settings(result) -> dict:
    """The trial's sampled keys, and for a grouped trial its best alignment variant's."""
    variant = result.metrics.get("variants", {}).get(result.metrics.get("best_variant"), {})
    return {**result.config, **variant.get("params", {})}


def describe(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "(base config)"


def confirm(sweep: Sweep, grid, name: str) -> int:
    """Run the best settings (per value of `confirm_per`, else overall) again over `confirm_space`."""
    cfg, best = sweep.cfg, {}
    for result in grid:
        if result.metrics and cfg.metric in result.metrics:
            group = tuple(result.config.get(k) for k in cfg.confirm_per)
            better = max if cfg.mode == "max" else min
            best[group] = better(best.get(group, result), result, key=lambda r: r.metrics[cfg.metric])
    codes = []
    for group, result in best.items():
        settings = chosen_settings(result)
        print(f"confirming {describe(settings)} over {', '.join(cfg.confirm_space)}", flush=True)
        suffix = "".join(f"-{v}" for v in group)
        codes.append(launch_sweep(confirmation(sweep, settings, f"{name}-confirm{suffix}",
                                                       storage_root(sweep.cfg.storage_path))))
    return max(codes, default=1)


def launch_sweep(sweep: Sweep, resume: bool = False, callbacks: tuple = ()) -> int:
    """The sweep with MLflow tracking (and `callbacks`, more Tune callbacks); 0 when every trial finished."""
    base = trial_config(sweep.base_tree, {})
    uri = resolve_uri(base.tracking.uri)
    check_reachable(uri)  # before any trial starts
    preflight(base)
    ensure_ray()
    check_storage(sweep.cfg.storage_path)  # a folder only this node sees fails at the first checkpoint otherwise
    check_gpus(base)

    def make_callbacks(named: Sweep) -> list:
        return [MlflowSweepCallback(uri, base.tracking.experiment, named.name, sweep_params(sweep), sweep.base_tree,
                                    experiment_path(named), sweep.cfg.metric, sweep.cfg.mode), *callbacks]

    # task checkpoints of short trials trip Tune's snapshot-frequency warning; the snapshots are wanted
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    name = sweep.name  # fit() adds the start time
    grid = fit(sweep, make_callbacks, resume)
    causes = [getattr(error, "cause", error) for error in grid.errors]
    missing = [cause for cause in causes if isinstance(cause, PluginError)]
    if missing:  # every trial would fail alike: the plugin is not on the cluster
        raise missing[0]
    for error, cause in zip(grid.errors, causes):
        reason = str(cause) if isinstance(cause, UserError) else str(error).splitlines()[0]
        print(f"trial failed: {without_passwords(reason)}")
    finished = [r for r in grid if r.error is None and r.metrics and sweep.cfg.metric in r.metrics]
    if not finished:  # a failed trial's last report is no result (a diverged run stops mid-way)
        print("no trial finished")
        return 1
    best = (max if sweep.cfg.mode == "max" else min)(finished, key=lambda r: r.metrics[sweep.cfg.metric])
    print(f"best trial: {describe(chosen_settings(best))}: {sweep.cfg.metric}={best.metrics[sweep.cfg.metric]:.2f}")
    print(f"{len(grid)} trials tracked in MLflow experiment '{base.tracking.experiment}' at {without_passwords(uri)}")
    if sweep.cfg.confirm_space and not grid.errors:
        return confirm(sweep, grid, name)
    print(f"open the results side by side: make ui, then {ui_link('http://127.0.0.1:5000', experiment_id(uri, base))}")
    return 1 if grid.errors else 0
