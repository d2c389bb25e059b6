"""`run_protocol`: the class-incremental sequence — the one loop every way of running it goes through.

Per task t: the family's worker trains the task from what the centre holds (IM: LoRA + new head from the merged
adapter) → the centre integrates it (IM: merge + align every method's heads) → the worker evaluates on all seen
tasks (engine/family.py names the slots). The loop owns resume, robustness after the last task, the
per-task checkpoint and `on_task`; a *step* owns where the task's work runs and how its tensors travel: `LocalStep`
runs it in this process, `imlca.orchestration.ray_step.RayStep` on Ray actors (as accelerate supplies the
distributed context around one training loop). The two cannot drift apart: there is one loop.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch

from imlca.config import ExperimentConfig, fingerprint
from imlca.core.metrics import summary
from imlca.engine.checkpoint import latest_checkpoint, load_checkpoint
from imlca.errors import CheckpointError

Callback = Callable[[dict], None]
Tensors = dict[str, torch.Tensor]
Heads = dict[str, list[torch.Tensor]]  # method → one head [n_t, D] per task


@dataclass
class RunResult:
    methods: list[str]
    acc: dict[str, list[list[float]]]  # method → lower-triangular accuracy matrix (percent)
    summary: dict[str, dict[str, float]]  # method → avg_acc, last_acc, forgetting
    reports: list[dict] = field(default_factory=list)  # the flat metrics after each task
    seconds: float = 0.0
    merged: Tensors = field(default_factory=dict, repr=False)  # the final weights (IM: merged adapter)
    heads: Heads = field(default_factory=dict, repr=False)  # method → final heads


class Step(Protocol):
    """Where a run's tasks execute. Built with (cfg, checkpoint_dir); `save` is a no-op without a folder."""
    num_tasks: int

    def resume(self) -> list[dict]: ...  # load the latest checkpoint; reports of the tasks it holds

    def run_task(self, task: int) -> dict: ...  # train → integrate → evaluate → record; the task's report

    def robustness(self) -> dict[str, float]: ...  # every method on the current weights

    def save(self, task: int) -> None: ...  # checkpoint the central state after `task`

    def final(self) -> tuple[dict[str, list[list[float]]], Tensors, Heads]: ...  # accuracy, weights, heads

    def close(self) -> None: ...


class LocalStep:
    """Everything in this process: the family's worker (model, data, device) and its central state."""

    def __init__(self, cfg: ExperimentConfig, checkpoint_dir: Path | None,
                 on_epoch: Callable[[int, int, float], None] | None = None):  # (task, epoch, training loss)
        from imlca.engine.family import central_class, worker_class  # the heavy side: timm, peft, the data

        self.runner, self.checkpoint_dir = worker_class(cfg)(cfg, on_epoch), checkpoint_dir
        self.state = central_class(cfg)(cfg, self.runner.theta0(), self.runner.model.dim)
        self.num_tasks = self.runner.num_tasks

    def resume(self) -> list[dict]:
        return self.state.resume(self.checkpoint_dir)

    def run_task(self, task: int) -> dict:
        weights, heads = self.state.integrate(self.runner.train(task, self.state.train_input()))
        return self.state.record(task, self.runner.evaluate(task, weights, heads))

    def robustness(self) -> dict[str, float]:
        return self.runner.robustness(*self.state.evaluation())

    def save(self, task: int) -> None:
        if self.checkpoint_dir is not None:
            self.state.save(self.checkpoint_dir, task)

    def final(self) -> tuple[dict[str, list[list[float]]], Tensors, Heads]:
        return (self.state.acc, *self.state.final())

    def close(self) -> None:
        pass


StepFactory = Callable[[ExperimentConfig, "Path | None"], Step]


def run_protocol(cfg: ExperimentConfig, on_task: Callback | None = None, checkpoint_dir: Path | None = None,
                 step: StepFactory = LocalStep) -> RunResult:
    """The whole run; with `checkpoint_dir`, saves after every task and resumes from the latest checkpoint."""
    start = time.perf_counter()
    runner = step(cfg, checkpoint_dir)
    try:
        reports = runner.resume()
        for task in range(len(reports), runner.num_tasks):
            report = runner.run_task(task)
            if task == runner.num_tasks - 1 and cfg.robustness.enabled:
                report.update(runner.robustness())
            runner.save(task)
            reports.append(report)
            if on_task is not None:
                on_task(report)
        acc, merged, heads = runner.final()
    finally:
        runner.close()
    methods = list(acc)
    return RunResult(methods, acc, {m: summary(acc[m]) for m in methods}, reports, time.perf_counter() - start,
                     merged, heads)


def check_resumable(cfg: ExperimentConfig, checkpoint_dir: Path) -> None:
    """Refuse a resume whose latest checkpoint is corrupt or from another config, before anything starts."""
    latest = latest_checkpoint(checkpoint_dir)
    if latest is None:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir}; run without --resume to start afresh")
    load_checkpoint(latest, fingerprint(cfg))
