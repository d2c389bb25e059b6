"""Tune → MLflow, on the driver: a parent run per sweep, a nested run per trial, a metric step per task.

Ray here, MLflow behind `imlca.tracking.store.Tracker`. A restored sweep (`Tuner.restore`) gets the callback as it
was built, so the parent run id is kept in a file in the experiment folder; trial runs are found again by their
trial-id tag, and steps an earlier driver already logged are not logged twice: no duplicate runs or points.

A finished trial's files and figures (about a second of exporting and PNG rendering) are written by one background
thread of the driver, so that Tune starts the next trial meanwhile; the sweep's end waits for them. A driver killed
before a finished trial's export leaves its run RUNNING: the resumed sweep's end exports it from the trial's last
checkpoint (Tune does not run a finished trial again).

A sqlite store lives on the driver's machine only: at the sweep's end a copy goes beside its Tune state when that is
in a bucket (`keep_sqlite_copy`); a database server (PostgreSQL) needs none.
"""
from __future__ import annotations

import json
import sqlite3
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ray import tune

from imlca.engine.artifacts import export_checkpoint
from imlca.engine.export import export_run_folder
from imlca.errors import without_passwords
from imlca.orchestration.storage import is_uri, join, read_text, upload_file, write_text
from imlca.orchestration.tune_sweep import trial_config
from imlca.tracking.database import snapshot, sqlite_file
from imlca.tracking.outputs import finish_sweep, log_run_outputs, system_metrics
from imlca.tracking.runs import log_dataset, run_params, run_tags, trial_name
from imlca.tracking.store import TRIAL_TAG, Tracker, resolve_uri


def keep_sqlite_copy(uri: str, experiment_dir: str) -> None:
    """A sqlite store lives on one machine's disk (a cluster's head): a copy beside the sweep's Tune state in the
    bucket outlives that machine, and `imlca report --uri <copy>` reads it. Nothing to copy for a database server."""
    source = sqlite_file(uri)
    if source is None or not is_uri(experiment_dir):
        return
    target = join(experiment_dir, "mlflow.db")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            snapshot(source, Path(tmp) / "mlflow.db")
            upload_file(Path(tmp) / "mlflow.db", target)
    except (OSError, sqlite3.Error) as err:  # the records are still in the local store; say why there is no copy
        print(f"warning: the tracking store {source} was not copied to {target}: {err}", flush=True)
        return
    print(f"tracking store copied to {target} (read it with: imlca report --uri {target})", flush=True)


def run_metrics(result: dict) -> dict:
    """Our report's numbers out of a Tune result (which also holds Tune's own bookkeeping)."""
    ours = ("A_t", "avg_acc", "last_acc", "forgetting", "forgetting_authors", "align_loss", "align_ce", "align_spread",
            "train_loss", "trajectory_cached")
    return {k: v for k, v in result.items() if k in ours or "/" in k or k.startswith(("acc_", "val_"))}


class MlflowSweepCallback(tune.Callback):
    def __init__(self, uri: str, experiment: str, sweep_name: str, sweep_params: dict, base_tree: dict,
                 experiment_dir: str, metric: str = "avg_acc", mode: str = "max"):
        self.uri, self.experiment, self.sweep_name = uri, experiment, sweep_name
        self.metric, self.mode = metric, mode  # the best trial (its metrics are copied to the parent run)
        self.sweep_params, self.base_tree = sweep_params, base_tree
        self.experiment_dir = experiment_dir
        self.state_file = join(experiment_dir, "imlca_mlflow.json")  # beside Tune's state, maybe in a bucket
        self.parent_id: str | None = None
        self.runs: dict[str, str] = {}  # trial id → MLflow run id
        self.logged: dict[str, int] = {}  # trial id → last step in MLflow
        self._tracker: Tracker | None = None
        self._monitor = None  # MLflow's system-metrics sampler on the parent run (this machine's CPU, memory)
        self._exporter: ThreadPoolExecutor | None = None  # finished trials' outputs, one at a time, in order
        self._exports: list[Future] = []
        self._exported: set[str] = set()  # trials this driver exported (the others are checked at the sweep's end)

    def __getstate__(self) -> dict:
        """What Tune pickles into the sweep's state (in its storage, maybe a bucket): the URI without password."""
        return {k: v for k, v in self.__dict__.items()} | {"_tracker": None, "_monitor": None, "_exporter": None,
                                                            "_exports": [], "_exported": set(),
                                                            "uri": without_passwords(self.uri)}

    def __setstate__(self, state: dict) -> None:
        """A restored sweep takes the password back from the environment's URI (the same store, or none)."""
        self.__dict__.update(state)
        current = resolve_uri(None)
        if without_passwords(current) == self.uri:
            self.uri = current

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(self.uri, self.experiment)
        return self._tracker

    def setup(self, **info) -> None:
        saved = read_text(self.state_file)
        if saved is not None:  # a restored sweep: its parent run already exists
            self.parent_id = json.loads(saved)["parent_run_id"]
        if self.parent_id is None:
            tags = {k: v for k, v in run_tags(trial_config(self.base_tree, {})).items()
                    if k.startswith("mlflow.source") or k == "git_commit"}
            self.parent_id = self.tracker.start_run(self.sweep_name, self.sweep_params,
                                                    {"imlca.kind": "sweep", **tags})
            write_text(self.state_file, json.dumps({"parent_run_id": self.parent_id}))
        self._monitor = system_metrics(self.uri, self.parent_id)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.runs:
            return
        found = self.tracker.find_trial_run(self.parent_id, trial.trial_id)
        if found is not None:
            self.logged[trial.trial_id] = self.tracker.last_step(found, "A_t")
        else:
            cfg = trial_config(self.base_tree, trial.config)
            tags = {**run_tags(cfg), TRIAL_TAG: trial.trial_id, "imlca.kind": "trial"}
            found = self.tracker.start_run(trial_name(trial.config, cfg.seed), run_params(cfg), tags, self.parent_id)
            log_dataset(self.tracker, found, cfg)
        self.runs[trial.trial_id] = found

    on_trial_restore = on_trial_start

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.on_trial_start(iteration, trials, trial)
        step = int(result["task"])
        if step > self.logged.get(trial.trial_id, -1):
            self.tracker.log_metrics(self.runs[trial.trial_id], run_metrics(result), step=step)
            self.logged[trial.trial_id] = step
        for name, variant in result.get("variants", {}).items():
            self._log_variant(trial, name, variant, step)

    def _log_variant(self, trial, name: str, variant: dict, step: int) -> None:
        """A grouped trial's alignment variant (align_space): a run of its own under the sweep, with its params;
        the trial's own run becomes the group's (best variant so far), which `report` skips."""
        key = f"{trial.trial_id}/{name}"
        if key not in self.runs:
            self.tracker.set_tag(self.runs[trial.trial_id], "imlca.kind", "group")
            found = self.tracker.find_trial_run(self.parent_id, key)
            if found is not None:
                self.logged[key] = self.tracker.last_step(found, "A_t")
            else:
                cfg = trial_config(self.base_tree, {**trial.config, **variant["params"]})
                tags = {**run_tags(cfg), TRIAL_TAG: key, "imlca.kind": "trial", "imlca.group": trial.trial_id}
                found = self.tracker.start_run(f"{trial} {name}", run_params(cfg), tags, self.parent_id)
            self.runs[key] = found
        if step > self.logged.get(key, -1):
            self.tracker.log_metrics(self.runs[key], run_metrics(variant["metrics"]), step=step)
            self.logged[key] = step

    def _end_variants(self, trial, status: str) -> None:
        for key in [k for k in self.runs if k.startswith(f"{trial.trial_id}/")]:
            self.tracker.end_run(self.runs[key], status)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id = self.runs.get(trial.trial_id)
        if run_id is None:
            return
        self._end_variants(trial, "FINISHED")
        if self._exporter is None:
            self._exporter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imlca-mlflow-export")
        self._exports.append(self._exporter.submit(self._finish_trial, run_id, trial.checkpoint,
                                                   trial_config(self.base_tree, trial.config)))
        self._exported.add(trial.trial_id)

    def _finish_trial(self, run_id: str, checkpoint, cfg) -> None:
        """The trial's artifacts from its last checkpoint (config, results, tensors, model, figures), then FINISHED."""
        if checkpoint is not None:
            with checkpoint.as_directory() as folder, tempfile.TemporaryDirectory() as out:
                export_checkpoint(Path(folder), cfg, Path(out))
                export_run_folder(Path(out), cfg)
                log_run_outputs(self.tracker, run_id, Path(out))
        self.tracker.end_run(run_id, "FINISHED")

    def _wait_for_exports(self) -> None:
        """Every finished trial's outputs are in MLflow; an export's error is raised here."""
        exports, self._exports = self._exports, []
        if self._exporter is not None:
            self._exporter.shutdown(wait=True)
            self._exporter = None
        for export in exports:
            export.result()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.runs:
            self._end_variants(trial, "FAILED")
            self.tracker.end_run(self.runs[trial.trial_id], "FAILED")

    def _finish_left_running(self, trials) -> None:
        """Trials Tune finished whose run is still RUNNING: a killed driver never ran their export."""
        for trial in trials:
            if trial.status != "TERMINATED" or trial.trial_id in self._exported:
                continue
            run_id = self.runs.get(trial.trial_id) or self.tracker.find_trial_run(self.parent_id, trial.trial_id)
            if run_id is not None and self.tracker.status(run_id) == "RUNNING":
                self._finish_trial(run_id, trial.checkpoint, trial_config(self.base_tree, trial.config))

    def on_experiment_end(self, trials, **info) -> None:
        self._wait_for_exports()
        if self.parent_id is None:
            return
        self._finish_left_running(trials)
        if self._monitor is not None:
            self._monitor.finish()
        page = finish_sweep(self.tracker, self.parent_id, f"imlca sweep {self.sweep_name}", self.metric, self.mode)
        if page is not None:
            write_text(join(self.experiment_dir, "report.html"), page)
            print(f"report: {join(self.experiment_dir, 'report.html')}", flush=True)
        self.tracker.end_run(self.parent_id, "FINISHED")
        keep_sqlite_copy(self.uri, self.experiment_dir)
