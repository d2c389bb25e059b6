"""Tune → MLflow, on the driver: a parent run per sweep, a nested run per trial, a metric step per task.

Ray here, MLflow behind `imlca.tracking.store.Tracker`. A restored sweep (`Tuner.restore`) gets the callback as it
was built, so the parent run id is kept in a file in the experiment folder; trial runs are found again by their
trial-id tag, and steps an earlier driver already logged are not logged twice: no duplicate runs or points.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ray import tune

from imlca.config import flatten
from imlca.engine.artifacts import export_checkpoint
from imlca.orchestration.tune_sweep import trial_config
from imlca.tracking.runs import run_tags
from imlca.tracking.store import TRIAL_TAG, Tracker, git_commit



def run_metrics(result: dict) -> dict:
    """Our report's numbers out of a Tune result (which also holds Tune's own bookkeeping)."""
    ours = ("A_t", "avg_acc", "last_acc", "forgetting", "forgetting_authors", "align_loss", "train_loss")
    return {k: v for k, v in result.items() if k in ours or "/" in k or k.startswith("acc_")}


class MlflowSweepCallback(tune.Callback):
    def __init__(self, uri: str, experiment: str, sweep_name: str, sweep_params: dict, base_tree: dict,
                 experiment_dir: str):
        self.uri, self.experiment, self.sweep_name = uri, experiment, sweep_name
        self.sweep_params, self.base_tree = sweep_params, base_tree
        self.state_file = Path(experiment_dir) / "imlca_mlflow.json"
        self.parent_id: str | None = None
        self.runs: dict[str, str] = {}  # trial id → MLflow run id
        self.logged: dict[str, int] = {}  # trial id → last step in MLflow
        self._tracker: Tracker | None = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_tracker"} | {"_tracker": None}

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(self.uri, self.experiment)
        return self._tracker

    def setup(self, **info) -> None:
        if self.state_file.is_file():  # a restored sweep: its parent run already exists
            self.parent_id = json.loads(self.state_file.read_text())["parent_run_id"]
        if self.parent_id is None:
            self.parent_id = self.tracker.start_run(self.sweep_name, self.sweep_params,
                                                    {"imlca.kind": "sweep", "git_commit": git_commit()})
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.state_file.write_text(json.dumps({"parent_run_id": self.parent_id}))

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.runs:
            return
        found = self.tracker.find_trial_run(self.parent_id, trial.trial_id)
        if found is not None:
            self.logged[trial.trial_id] = self.tracker.last_step(found, "A_t")
        else:
            cfg = trial_config(self.base_tree, trial.config)
            tags = {**run_tags(cfg), TRIAL_TAG: trial.trial_id, "imlca.kind": "trial"}
            found = self.tracker.start_run(str(trial), flatten(cfg), tags, self.parent_id)
        self.runs[trial.trial_id] = found

    on_trial_restore = on_trial_start

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.on_trial_start(iteration, trials, trial)
        step = int(result["task"])
        if step > self.logged.get(trial.trial_id, -1):
            self.tracker.log_metrics(self.runs[trial.trial_id], run_metrics(result), step=step)
            self.logged[trial.trial_id] = step

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id = self.runs.get(trial.trial_id)
        if run_id is None:
            return
        if trial.checkpoint is not None:
            cfg = trial_config(self.base_tree, trial.config)
            with trial.checkpoint.as_directory() as folder, tempfile.TemporaryDirectory() as out:
                export_checkpoint(Path(folder), cfg, Path(out))
                self.tracker.log_artifacts(run_id, out)
        self.tracker.end_run(run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.runs:
            self.tracker.end_run(self.runs[trial.trial_id], "FAILED")

    def on_experiment_end(self, trials, **info) -> None:
        if self.parent_id is not None:
            self.tracker.end_run(self.parent_id, "FINISHED")
