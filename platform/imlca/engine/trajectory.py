"""A run's backbone trajectory, and the run replayed from it at the cost of alignment and a matrix product.

Everything a run computes from images depends only on the trajectory keys (`data`, `model`, `lora`, `train`,
`merge`, `seed`): each task's fine-tuned adapter and new head, the new classes' statistics, the running merged
adapter and the features of the seen tasks' test (and validation) images on that merged backbone. Alignment
(`align.*`) only changes heads, so a run with any alignment settings is `replay(cfg, trajectory)`: merge, align and
score cached features; the same numbers as `run_protocol`, bit for bit (tested).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from imlca.config import ExperimentConfig
from imlca.core.metrics import predict, summary, task_accuracies
from imlca.engine.loops import extract_features
from imlca.engine.protocol import Callback, RunResult, make_result
from imlca.engine.runner import TaskOutput, TaskRunner
from imlca.engine.state import MergeState

Tensors = dict[str, torch.Tensor]
Features = tuple[torch.Tensor, torch.Tensor]  # features float32 [N, D], targets (class positions) int64 [N]


@dataclass
class TaskStep:
    """Task t of a trajectory; `features[part]` covers the samples of tasks 0..t on the merged backbone after t."""
    task: int
    adapter: Tensors  # the task's fine-tuned adapter (merge space)
    merged: Tensors  # θ_merged after this task
    head: torch.Tensor  # [n_t, D] the new head as trained
    statistics: Tensors  # GaussianBank.state_dict() of the new classes
    losses: list[float]  # training loss per epoch
    features: dict[str, Features] = field(default_factory=dict)  # "test" and, with a validation split, "val"

    def output(self) -> TaskOutput:
        return TaskOutput(self.task, self.adapter, self.head, self.statistics, self.losses)


@dataclass
class Trajectory:
    theta0: Tensors
    dim: int
    bounds: list[tuple[int, int]]  # class positions [lo, hi) of each task
    steps: list[TaskStep] = field(default_factory=list)


def trajectory_only(cfg: ExperimentConfig) -> ExperimentConfig:
    """The config with no alignment: MergeState then merges and stores heads, and aligns nothing."""
    return dataclasses.replace(cfg, align=dataclasses.replace(cfg.align, method="im", compare=[]))


@torch.no_grad()
def merged_features(runner: TaskRunner, part: str, task: int, merged: Tensors) -> Features:
    """Features of the samples of tasks 0..task on the merged backbone, exactly as `TaskRunner.evaluate` sees them
    (same transform, batch size and order)."""
    runner.space.load(runner.model, {k: v.to(runner.device) for k, v in merged.items()})
    loader = DataLoader(runner.benchmark.view(part, range(task + 1), runner.test_tf),
                        batch_size=runner.cfg.eval.batch_size, num_workers=runner.cfg.data.num_workers)
    return extract_features(runner.model, loader, runner.device, runner.cfg.train.precision)


def compute_trajectory(cfg: ExperimentConfig, on_task: Callback | None = None) -> Trajectory:
    """Fine-tune every task from the merged adapter, merge, and keep what alignment and scoring need."""
    runner = TaskRunner(cfg)
    state = MergeState(trajectory_only(cfg), runner.theta0(), runner.model.dim)
    split = runner.benchmark.split
    parts = ["test"] + (["val"] if runner.benchmark.val is not None else [])
    trajectory = Trajectory(state.theta0, runner.model.dim, [split.task_range(t) for t in range(split.num_tasks)])
    for task in range(runner.num_tasks):
        out = runner.train(task, state.merged)
        merged, _ = state.integrate(out)
        features = {part: merged_features(runner, part, task, merged) for part in parts}
        trajectory.steps.append(TaskStep(task, out.adapter, merged, out.head, out.statistics, out.losses, features))
        if on_task is not None:
            on_task({"task": task, "train_loss": out.losses[-1]})
    return trajectory


def scores(features: Features, heads: dict[str, list[torch.Tensor]], bounds: list[tuple[int, int]]) -> dict:
    """method → accuracy per seen task (percent): argmax over all seen classes, as `TaskRunner.evaluate`."""
    feats, targets = features
    return {method: task_accuracies(predict(feats, weights), targets, bounds) for method, weights in heads.items()}


class Replay:
    """One alignment configuration run over a trajectory, task by task; `step` returns the task's report: the
    test metrics of `MergeState.report`, and with a validation split the same under `val_` (`val_avg_acc`, ...)."""

    def __init__(self, cfg: ExperimentConfig, trajectory: Trajectory):
        self.cfg, self.trajectory = cfg, trajectory
        self.state = MergeState(cfg, trajectory.theta0, trajectory.dim)
        self.val_acc: dict[str, list[list[float]]] = {m: [] for m in self.state.methods}
        self.reports: list[dict] = []

    def step(self, step: TaskStep) -> dict:
        merged, heads = self.state.integrate(step.output())
        bounds = self.trajectory.bounds[: step.task + 1]
        report = self.state.record(step.task, scores(step.features["test"], heads, bounds))
        if "val" in step.features:
            for method, row in scores(step.features["val"], heads, bounds).items():
                self.val_acc[method].append(row)
                report.update(self._val_metrics(method, row))
        self.reports.append(report)
        return report

    def _val_metrics(self, method: str, row: list[float]) -> dict:
        metrics = {"A_t": sum(row) / len(row), **summary(self.val_acc[method])}
        metrics.update({f"acc_{j}": value for j, value in enumerate(row)})
        out = {f"{method}/val_{k}": v for k, v in metrics.items()}
        if method == self.cfg.align.method:
            out.update({f"val_{k}": v for k, v in metrics.items()})
        return out

    def result(self, seconds: float) -> RunResult:
        return make_result(self.state.acc, self.reports, seconds, self.state.merged, self.state.heads)


def replay(cfg: ExperimentConfig, trajectory: Trajectory, on_task: Callback | None = None) -> RunResult:
    """The run of `cfg` from its trajectory (which must come from `cfg`'s trajectory keys)."""
    start = time.perf_counter()
    run = Replay(cfg, trajectory)
    for step in trajectory.steps:
        report = run.step(step)
        if on_task is not None:
            on_task(report)
    return run.result(time.perf_counter() - start)
