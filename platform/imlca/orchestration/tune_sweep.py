"""Ray Tune sweeps: one trial = one distributed run; reports after every task with a task checkpoint.

The trainable reserves no resources itself (empty first bundle) and imports no model code; its TaskWorker gets
the second bundle (`resources.num_cpus`/`num_gpus` of the base config), so the autoscaler adds a GPU node per
waiting trial. A cached trial (tune_cached.py) trains in its own process, which holds the worker's resources.

A diverged trial records its DivergenceError in its trial folder so that a retry can re-raise it instead of training
(Tune 2.x retries every failure alike; FailureConfig cannot tell errors apart), and ProgressCallback stops its
retries after the one restart Tune has already scheduled: two failures in all, one training (tests/test_divergence.py).
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from ray import cloudpickle, tune
from ray.tune.schedulers import ASHAScheduler

from imlca.config import ExperimentConfig, from_dict, merge_trees
from imlca.engine.checkpoint import latest_checkpoint, task_dir
from imlca.errors import DivergenceError, UserError
from imlca.plugins import TRIAL, PluginError, worker_config
from imlca.orchestration.cluster import ensure_ray
from imlca.orchestration.ray_step import run_distributed
from imlca.orchestration.storage import folders, join, read_text, storage_root, write_text
from imlca.orchestration.worker_pool import process_pool
from imlca.config.sweep import SchedulerConfig, Sweep
from imlca.registries import DISTRIBUTIONS, SCHEDULERS, SEARCHERS


# --- the implementations of imlca.registries' DISTRIBUTIONS, SEARCHERS and SCHEDULERS ---------------------------

def grid_domain(values: list):
    return tune.grid_search(values)


def choice_domain(values: list):
    return tune.choice(values)


def uniform_domain(values: list):
    return tune.uniform(*values)


def loguniform_domain(values: list):
    return tune.loguniform(*values)


def randint_domain(values: list):
    return tune.randint(*values)


def basic_search():
    return None  # Tune's BasicVariantGenerator


def optuna_search():
    try:
        from ray.tune.search.optuna import OptunaSearch
        return OptunaSearch()
    except (ImportError, AssertionError):
        raise UserError("search: optuna needs the optuna package; pip install optuna, or use search: basic") from None


def no_scheduler(cfg: SchedulerConfig):
    return None


def asha_scheduler(cfg: SchedulerConfig):
    return ASHAScheduler(time_attr="training_iteration", grace_period=cfg.grace_period,
                         reduction_factor=cfg.reduction_factor)


class ProgressCallback(tune.Callback):
    """One line per trial and task on the driver (the trials' own logs stay in Ray's log files)."""

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        settings = ", ".join(f"{k}={v}" for k, v in trial.config.items())
        print(f"[{trial.trial_id}] {settings or 'base'}: task {result['task']} A_t={result['A_t']:.2f} "
              f"avg_acc={result['avg_acc']:.2f}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        print(f"[{trial.trial_id}] failed; its log: {trial.path}", flush=True)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """A diverged trial, or one that lacks a plugin, gets no further retries. Tune has already scheduled one restart when it calls this (it
        offers no hook before its retry decision); that restart re-raises the trial's recorded error without
        training. The error is read from the driver's own copy: `get_pickled_error()` reads the storage copy, which
        is synced later."""
        if trial.run_metadata.pickled_error_filename and Path(trial.pickled_error_file).is_file():
            error = cloudpickle.loads(Path(trial.pickled_error_file).read_bytes())
            if isinstance(getattr(error, "cause", None), (DivergenceError, PluginError)):
                trial.max_failures = 0


def param_space(sweep: Sweep) -> dict:
    """Dotted config keys → Tune domains."""
    return {key: DISTRIBUTIONS.load(kind)(values) for key, spec in sweep.cfg.space.items()
            for kind, values in spec.items()}


def trial_config(base_tree: dict, params: dict) -> ExperimentConfig:
    return from_dict(ExperimentConfig, merge_trees(base_tree, params))


DIVERGED = "diverged"  # <storage>/<experiment>/diverged/<trial id>.json: the DivergenceError that ended a trial


def divergence_record(storage: str) -> str:
    """Where this trial's divergence is recorded: beside Tune's state, on storage every node sees (the trial folder
    of `get_trial_dir()` is node-local, and a restart in a reused trial process may see another one)."""
    context = tune.get_context()
    return join(storage, f"{context.get_experiment_name()}/{DIVERGED}/{context.get_trial_id()}.json")


def trainable(params: dict, base_tree: dict, storage: str) -> None:
    """One trial: the run, resumed from Tune's checkpoint when the trial is retried or the sweep restored."""
    cfg = worker_config(merge_trees(base_tree, params), TRIAL)
    record = divergence_record(storage)
    recorded = read_text(record)
    if recorded is not None:  # a retry of a diverged trial: the same seeds would diverge again
        raise DivergenceError(**json.loads(recorded))
    root = Path(tempfile.mkdtemp(prefix="imlca-trial-"))
    restored = tune.get_checkpoint()
    if restored is not None:
        folder = Path(restored.to_directory())
        task = int(json.loads((folder / "meta.json").read_text())["task"])
        shutil.copytree(folder, task_dir(root, task))
        print(f"trial resumes after task {task} from its checkpoint {restored.path}", flush=True)

    def report(metrics: dict) -> None:
        folder = latest_checkpoint(root)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(folder)))

    try:
        run_distributed(cfg, on_task=report, checkpoint_dir=root, pool=process_pool())  # the last trial's actors
    except DivergenceError as err:
        write_text(record, json.dumps({"what": err.what, "fix": err.fix, "task": err.task, "epoch": err.epoch}))
        raise
    finally:
        shutil.rmtree(root, ignore_errors=True)


def trial_resources(sweep: Sweep) -> tune.PlacementGroupFactory:
    """A plain trial's process only drives its actors (bundle 0, empty: the CentralActor goes there too) and its
    TaskWorker takes bundle 1; a cached trial trains and aligns in its own process, which holds the worker's share."""
    worker = from_dict(ExperimentConfig, sweep.base_tree).resources.ray_resources()
    bundles = [worker] if sweep.cfg.cached else [{}, worker]
    return tune.PlacementGroupFactory(bundles, strategy="PACK")


def build_tuner(sweep: Sweep, callbacks: list) -> tune.Tuner:
    cfg = sweep.cfg
    scheduler = SCHEDULERS.load(cfg.scheduler.type)(cfg.scheduler)
    run = tune.RunConfig(name=sweep.name, storage_path=storage_root(cfg.storage_path), callbacks=callbacks,
                         failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                         checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=0)
    tune_cfg = tune.TuneConfig(metric=cfg.metric, mode=cfg.mode, scheduler=scheduler, num_samples=cfg.num_samples,
                               max_concurrent_trials=cfg.max_concurrent_trials, search_alg=SEARCHERS.load(cfg.search)(),
                               reuse_actors=True)  # a trial process, and its warm actors, serve the next trial
    return tune.Tuner(wrapped_trainable(sweep), param_space=param_space(sweep), tune_config=tune_cfg,
                      run_config=run)


def wrapped_trainable(sweep: Sweep):
    cfg = sweep.cfg
    if cfg.cached:  # trajectories from the cache; align_space values aligned inside each trial
        # imported here: a plain trial's process only drives actors and never loads timm, peft or transformers
        # (about 9 s and 270 MiB less per trial process, CHANGELOG.md, 0.1.0); a cached trial trains in its own
        # process and needs them
        from imlca.orchestration.tune_cached import cached_trainable

        function = tune.with_parameters(cached_trainable, base_tree=sweep.base_tree, variants=cfg.variants(),
                                        cache_uri=cfg.cache_location(storage_root(cfg.storage_path)),
                                        metric=cfg.metric, mode=cfg.mode)
    else:
        function = tune.with_parameters(trainable, base_tree=sweep.base_tree, storage=storage_root(cfg.storage_path))
    return tune.with_resources(function, trial_resources(sweep))


def experiment_path(sweep: Sweep) -> str:
    """The sweep's experiment folder: a local path or a URI in the object store."""
    return join(storage_root(sweep.cfg.storage_path), sweep.name)


def latest_experiment(sweep: Sweep) -> str | None:
    """The newest restorable experiment folder of this sweep (`<storage>/<name>-<time>`)."""
    found = [p for p in folders(storage_root(sweep.cfg.storage_path), f"{sweep.name}-") if tune.Tuner.can_restore(p)]
    return found[-1] if found else None


def fit(sweep: Sweep, make_callbacks, resume: bool = False):
    """Run the sweep, or with `resume` continue its newest experiment through `Tuner.restore` (finished trials are
    not re-run; the restored callbacks keep their MLflow run ids). Returns Tune's ResultGrid."""
    ensure_ray()
    previous = latest_experiment(sweep) if resume else None
    if previous is not None:
        print(f"resuming {previous}", flush=True)
        tuner = tune.Tuner.restore(previous, wrapped_trainable(sweep), resume_unfinished=True,
                                   resume_errored=True)
    else:
        sweep.name = f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        tuner = build_tuner(sweep, [ProgressCallback(), *make_callbacks(sweep)])
    return tuner.fit()
