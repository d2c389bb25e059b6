"""Single runs in MLflow (`python -m imlca run --track`): the same params, tags, metrics and artifacts as a
sweep trial, without Tune."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from imlca.config import ExperimentConfig, flatten
from imlca.tracking.store import Tracker, check_reachable, git_commit, resolve_uri


def run_tags(cfg: ExperimentConfig) -> dict:
    return {"benchmark": cfg.data.benchmark, "method": cfg.align.method, "merge_rule": cfg.merge.rule,
            "seed": cfg.seed, "backbone": cfg.model.backbone, "git_commit": git_commit()}


class TrackedRun:
    """Opens the run before training (an unreachable server fails first), logs each task, closes with status."""

    def __init__(self, cfg: ExperimentConfig):
        uri = resolve_uri(cfg.tracking.uri)
        check_reachable(uri)
        self.tracker = Tracker(uri, cfg.tracking.experiment)
        self.run_id = self.tracker.start_run(cfg.name, flatten(cfg), {**run_tags(cfg), "imlca.kind": "run"})

    def on_task(self, report: dict) -> None:
        self.tracker.log_metrics(self.run_id, report, step=int(report["task"]))

    def finish(self, write: Callable[[Path], None] | None, status: str = "FINISHED") -> None:
        if write is not None:
            with tempfile.TemporaryDirectory() as out:
                write(Path(out))
                self.tracker.log_artifacts(self.run_id, out)
        self.tracker.end_run(self.run_id, status)
