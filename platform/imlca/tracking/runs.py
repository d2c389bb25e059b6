"""Single runs in MLflow (`python -m imlca run --track`): the same params, tags, metrics and artifacts as a
sweep trial, without Tune."""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Callable

from imlca.config import ExperimentConfig, flatten
from imlca.tracking.outputs import log_run_outputs, system_metrics
from imlca.tracking.store import Tracker, check_reachable, git_commit, resolve_uri


def run_tags(cfg: ExperimentConfig) -> dict:
    commit = git_commit()
    tags = {"benchmark": cfg.data.benchmark, "method": cfg.align.method, "family": cfg.align.family,
            "merge_rule": cfg.merge.rule if cfg.align.family == "im" else "-",  # IM's alone
            "seed": cfg.seed, "backbone": cfg.model.backbone, "git_commit": commit,
            "mlflow.source.name": "imlca", "mlflow.source.type": "LOCAL"}
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags


def run_params(cfg: ExperimentConfig) -> dict:
    """The resolved config as dotted params, and the method family (so runs compare by family in the UI)."""
    return {**flatten(cfg), "family": cfg.align.family}


def short_value(value) -> str:
    """`0.1`; a sweep case ({"file", "set"}) by its file."""
    if isinstance(value, dict) and "file" in value:
        return str(value["file"])
    return f"{value:g}" if isinstance(value, float) else str(value)


def trial_name(params: dict, seed: int) -> str:
    """A trial's run name from its swept values: `lam=0.1 rule=ties seed=1993` (last part of each dotted key)."""
    parts = {key.rsplit(".", 1)[-1]: short_value(value) for key, value in params.items()}
    parts.setdefault("seed", str(seed))
    return " ".join(f"{k}={v}" for k, v in parts.items())


def log_dataset(tracker: Tracker, run_id: str, cfg: ExperimentConfig) -> None:
    """The benchmark as the run's input: name, a digest of every data setting, where the images come from."""
    data = flatten(cfg.data)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    source = {"benchmark": cfg.data.benchmark, "root": str(cfg.data.root or "$IMLCA_DATA or embedded"),
              "seed": str(cfg.seed)}
    tracker.log_dataset(run_id, cfg.data.benchmark, digest, source, "train")


class TrackedRun:
    """Opens the run before training (an unreachable server fails first), logs each task, closes with status."""

    def __init__(self, cfg: ExperimentConfig):
        uri = resolve_uri(cfg.tracking.uri)
        check_reachable(uri)
        self.tracker = Tracker(uri, cfg.tracking.experiment)
        self.run_id = self.tracker.start_run(cfg.name, run_params(cfg), {**run_tags(cfg), "imlca.kind": "run"})
        log_dataset(self.tracker, self.run_id, cfg)
        self.monitor = system_metrics(uri, self.run_id)

    def on_task(self, report: dict) -> None:
        self.tracker.log_metrics(self.run_id, report, step=int(report["task"]))

    def on_epoch(self, task: int, epoch: int, loss: float, epochs: int) -> None:
        """Train loss per epoch, stepped over the whole run (task × epochs + epoch)."""
        self.tracker.log_metrics(self.run_id, {"epoch_train_loss": loss}, step=task * epochs + epoch)

    def finish(self, write: Callable[[Path], None] | None, status: str = "FINISHED") -> None:
        if self.monitor is not None:
            self.monitor.finish()
        if write is not None:
            with tempfile.TemporaryDirectory() as out:
                write(Path(out))
                log_run_outputs(self.tracker, self.run_id, Path(out))
        self.tracker.end_run(self.run_id, status)
