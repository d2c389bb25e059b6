"""`run_protocol`: the whole class-incremental sequence in one process (the reference every other path matches).

Per task t: train LoRA + new head from the merged adapter → statistics of the new classes → merge → align every
method's heads → evaluate on all seen tasks (DESIGN §1).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


import torch

from imlca.config import ExperimentConfig, fingerprint
from imlca.core.metrics import summary
from imlca.engine.artifacts import write_artifacts
from imlca.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from imlca.engine.runner import TaskRunner
from imlca.engine.state import MergeState
from imlca.errors import CheckpointError

Callback = Callable[[dict], None]
Tensors = dict[str, torch.Tensor]


@dataclass
class RunResult:
    methods: list[str]
    acc: dict[str, list[list[float]]]  # method → lower-triangular accuracy matrix (percent)
    summary: dict[str, dict[str, float]]  # method → avg_acc, last_acc, forgetting
    reports: list[dict] = field(default_factory=list)  # the flat metrics after each task
    seconds: float = 0.0
    merged: Tensors = field(default_factory=dict, repr=False)  # the final merged adapter
    heads: dict[str, list[torch.Tensor]] = field(default_factory=dict, repr=False)  # method → final heads


def make_result(acc: dict[str, list[list[float]]], reports: list[dict], seconds: float, merged: Tensors,
                heads: dict[str, list[torch.Tensor]]) -> RunResult:
    methods = list(acc)
    return RunResult(methods, acc, {m: summary(acc[m]) for m in methods}, reports, seconds, merged, heads)


def resume_state(state: MergeState, checkpoint_dir: Path | None) -> list[dict]:
    """Load the latest complete checkpoint into `state` (if any); returns the reports of the finished tasks."""
    latest = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if latest is None:
        return []
    state.load_state_dict(*load_checkpoint(latest, fingerprint(state.cfg)))
    return [state.report(task) for task in range(state.tasks_merged)]


def check_resumable(cfg: ExperimentConfig, checkpoint_dir: Path) -> None:
    """Refuse a resume whose latest checkpoint is corrupt or from another config, before anything starts."""
    latest = latest_checkpoint(checkpoint_dir)
    if latest is None:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir}; run without --resume to start afresh")
    load_checkpoint(latest, fingerprint(cfg))


def run_protocol(cfg: ExperimentConfig, on_task: Callback | None = None,
                 checkpoint_dir: Path | None = None) -> RunResult:
    """The whole run; with `checkpoint_dir`, saves after every task and resumes from the latest checkpoint."""
    start = time.perf_counter()
    runner = TaskRunner(cfg)
    state = MergeState(cfg, runner.theta0(), runner.model.dim)
    reports = resume_state(state, checkpoint_dir)
    for task in range(state.tasks_merged, runner.num_tasks):
        merged, heads = state.integrate(runner.train(task, state.merged))
        reports.append(state.record(task, runner.evaluate(task, merged, heads)))
        if task == runner.num_tasks - 1 and cfg.robustness.enabled:
            reports[-1].update(runner.robustness(merged, heads))
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, task, *state.state_dict())
        if on_task is not None:
            on_task(reports[-1])
    return make_result(state.acc, reports, time.perf_counter() - start, state.merged, state.heads)


def format_row(method: str, task: int, row: list[float]) -> str:
    cells = " ".join(f"{v:6.2f}" for v in row)
    return f"task {task} {method:7s} A_t={sum(row) / len(row):6.2f} | {cells}"


def task_printer(methods: list[str]) -> Callback:
    """Prints every method's accuracy row of a task report."""
    def show(report: dict) -> None:
        task = report["task"]
        for method in methods:
            row = [report[f"{method}/acc_{j}"] for j in range(task + 1)]
            print(format_row(method, task, row), flush=True)
    return show


def print_summary(result: RunResult) -> None:
    for method in result.methods:
        s = result.summary[method]
        print(f"{method:7s} avg_acc(Ā)={s['avg_acc']:.2f} last_acc={s['last_acc']:.2f} "
              f"forgetting={s['forgetting']:.2f}")
    print(f"wall time {result.seconds:.1f} s")


def write_outputs(out_dir: Path, cfg: ExperimentConfig, result: RunResult) -> None:
    write_artifacts(out_dir, cfg, result.acc, result.merged, result.heads,
                    {"reports": result.reports, "seconds": result.seconds})
