"""A run's backbone trajectory, and the run replayed from it at the cost of alignment and a matrix product.

Everything a run computes from images depends only on the trajectory keys (`data`, `model`, `lora`, `train`,
`merge`, `seed`): each task's fine-tuned adapter and new head, the new classes' statistics, the running merged
adapter and the features of the seen tasks' test (and validation) images on that merged backbone. Alignment
(`align.*`) only changes heads, so a run with any alignment settings is `replay(cfg, trajectory)`: merge, align and
score cached features; the same numbers as `run_protocol` with `LocalStep`, bit for bit (tested). Both directions
are steps of the one protocol loop: `TrajectoryStep` records a trajectory, `ReplayStep` replays one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from imlca.config import ExperimentConfig
from imlca.core.gaussian_bank import GaussianBank
from imlca.core.metrics import predict, task_accuracies, task_counts
from imlca.data.cached_loader import loader_workers
from imlca.engine.loops import extract_features
from imlca.engine.protocol import Callback, Heads, LocalStep, RunResult, run_protocol
from imlca.engine.state import MergeState
from imlca.engine.task_output import TaskOutput
from imlca.errors import ConfigError

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


def scores(features: Features, heads: Heads, bounds: list[tuple[int, int]]) -> dict[str, list[float]]:
    """method → accuracy per seen task (percent): argmax over all seen classes, as `TaskRunner.evaluate`."""
    feats, targets = features
    return {method: task_accuracies(predict(feats, weights), targets, bounds) for method, weights in heads.items()}


def scored_parts(features: dict[str, Features], heads: Heads, bounds: list[tuple[int, int]]) -> dict:
    """What `TaskRunner.evaluate` returns, from cached features: part → `scores`, "count" → part → samples per
    task."""
    parts: dict = {part: scores(f, heads, bounds) for part, f in features.items()}
    return {**parts, "count": {part: task_counts(f[1], bounds) for part, f in features.items()}}


class TrajectoryStep(LocalStep):
    """`LocalStep` on the trajectory-only config that also keeps what a replay needs (its reports are IM's)."""

    def __init__(self, cfg: ExperimentConfig, checkpoint_dir: Path | None):
        super().__init__(trajectory_only(cfg), None)  # a trajectory is cached whole, not checkpointed per task
        split = self.runner.benchmark.split
        self.parts = ["test"] + (["val"] if self.runner.benchmark.val is not None else [])
        self.trajectory = Trajectory(self.state.theta0, self.runner.model.dim,
                                     [split.task_range(t) for t in range(split.num_tasks)])

    @torch.no_grad()
    def features(self, part: str, task: int, merged: Tensors) -> Features:
        """Features of tasks 0..task's samples on the merged backbone, exactly as `TaskRunner.evaluate` sees them
        (same transform, batch size and order)."""
        runner = self.runner
        runner.space.load(runner.model, {k: v.to(runner.device) for k, v in merged.items()})
        loader = DataLoader(runner.benchmark.view(part, range(task + 1), runner.test_tf),
                            batch_size=runner.cfg.eval.batch_size, num_workers=loader_workers(runner.cfg))
        return extract_features(runner.model, loader, runner.device)  # fp32 always (issue 12)

    def run_task(self, task: int) -> dict:
        out = self.runner.train(task, self.state.merged)
        merged, heads = self.state.integrate(out)
        features = {part: self.features(part, task, merged) for part in self.parts}
        self.trajectory.steps.append(TaskStep(task, out.adapter, merged, out.head, out.statistics, out.losses,
                                              features))
        bounds = self.trajectory.bounds[: task + 1]
        return self.state.record(task, scored_parts(features, heads, bounds))


def compute_trajectory(cfg: ExperimentConfig, on_task: Callback | None = None) -> Trajectory:
    """Fine-tune every task from the merged adapter, merge, and keep what alignment and scoring need."""
    made: list[TrajectoryStep] = []

    def step(c: ExperimentConfig, folder: Path | None) -> TrajectoryStep:
        made.append(TrajectoryStep(c, folder))
        return made[-1]

    run_protocol(cfg, on_task, step=step)
    return made[0].trajectory


class Replay:
    """Alignment configurations (a grouped trial's variants, by name) over one trajectory, task by task; `step`
    returns each one's report (`MergeState.report`: test metrics, and with a validation split the same under `val_`).

    The trajectory's statistics go into one Gaussian bank per ridge value (normally one) that every variant reads,
    its Cholesky factors computed once per class, and the adapters are merged once (the variants differ in `align.*`
    keys only); a variant's state owns only its heads, accuracies and losses (its alignment draws come from
    generators seeded per task). So the memory of a trial grows with its grid by a few heads per variant, not by a
    bank (≈ 9.4 MB a class at 768-d).
    """

    def __init__(self, cfgs: dict[str, ExperimentConfig], trajectory: Trajectory):
        self.trajectory = trajectory
        self.banks = {ridge: GaussianBank(trajectory.dim, ridge) for ridge in {c.align.ridge for c in cfgs.values()}}
        self.states = {name: MergeState(cfg, trajectory.theta0, trajectory.dim, self.banks[cfg.align.ridge])
                       for name, cfg in cfgs.items()}
        first = next(iter(cfgs.values()))  # merges (no alignment) for all: merge.* is alike in every variant
        self.merger = MergeState(trajectory_only(first), trajectory.theta0, trajectory.dim,
                                 self.banks[first.align.ridge])
        self.tasks_banked = 0  # tasks whose statistics are in the banks

    def step(self, step: TaskStep) -> dict[str, dict]:
        if step.task == self.tasks_banked:  # once: the states' `integrate` is idempotent, so is this
            for ridge, bank in self.banks.items():
                bank.merge(GaussianBank.from_state_dict(step.statistics, ridge))
            self.tasks_banked += 1
        merged, _ = self.merger.integrate(step.output())
        bounds = self.trajectory.bounds[: step.task + 1]
        reports = {}
        for name, state in self.states.items():
            _, heads = state.integrate(step.output(), merged=merged)
            reports[name] = state.record(step.task, scored_parts(step.features, heads, bounds))
        return reports


class ReplayStep:
    """The protocol's step for a cached trajectory: nothing is trained, so nothing needs a checkpoint."""

    def __init__(self, cfg: ExperimentConfig, trajectory: Trajectory):
        if cfg.robustness.enabled:
            raise ConfigError("robustness", "a cached trajectory holds features, not images; run robustness "
                              "without the trajectory cache")
        self.replay, self.num_tasks = Replay({"run": cfg}, trajectory), len(trajectory.steps)

    def resume(self) -> list[dict]:
        return []

    def run_task(self, task: int) -> dict:
        return self.replay.step(self.replay.trajectory.steps[task])["run"]

    def robustness(self) -> dict[str, float]:
        return {}  # refused at construction

    def save(self, task: int) -> None:
        pass

    def final(self) -> tuple[dict[str, list[list[float]]], Tensors, Heads]:
        state = self.replay.states["run"]
        return state.acc, state.merged, state.heads

    def close(self) -> None:
        pass


def replay(cfg: ExperimentConfig, trajectory: Trajectory, on_task: Callback | None = None) -> RunResult:
    """The run of `cfg` from its trajectory (which must come from `cfg`'s trajectory keys)."""
    return run_protocol(cfg, on_task, step=lambda c, _folder: ReplayStep(c, trajectory))
