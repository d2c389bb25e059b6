"""A method family: the five slots every family fills (one `registries.FAMILIES` entry names its two classes).

| slot | where | here |
|---|---|---|
| what a task trains | worker | `Worker.train(task, given) -> TaskOutput` |
| what travels to the centre | wire | `TaskOutput` (its trained weights, new head, new-class statistics, losses) |
| what the centre keeps | central actor | a `Central` (checkpointed through engine/checkpoint.py) |
| what the centre does with it | central actor | `Central.integrate(out) -> (weights, heads)` |
| what a task is evaluated with | worker | `Worker.evaluate(task, weights, heads)` |

`integrate` returns the state a task is evaluated with, and its weights are what the next task trains from
(`Central.train_input()`); `run_protocol`'s steps (in-process, Ray) move exactly these between the two sides, so
a family plugs into one loop. IM's weights are the merged adapter, SLCA's the whole backbone; a family whose
worker needs more of the centre to train (EASE: every earlier adapter; MOS: the carried adapter, the snapshots'
mean, the head, old class means) puts it among those weights as named tensors (the Ray steps train the next task
from `integrate`'s weights; `train_input` returns the same). Heads are method → one tensor per task; a family
predicts with them as its worker's `evaluate` says.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from imlca.config import ExperimentConfig
from imlca.engine.task_output import TaskOutput
from imlca.registries import FAMILIES, resolve

Tensors = dict[str, torch.Tensor]
Heads = dict[str, list[torch.Tensor]]
Rows = dict[str, dict[str, list[float]]]  # "test" | "val" → method → accuracy per seen task; "count" → samples


class Worker(Protocol):
    num_tasks: int

    def theta0(self) -> Tensors: ...  # the weights before any task (the central state starts from them)

    def train(self, task: int, given: Tensors) -> TaskOutput: ...

    def evaluate(self, task: int, weights: Tensors, heads: Heads) -> Rows: ...

    def robustness(self, weights: Tensors, heads: Heads) -> dict[str, float]: ...


class Central(Protocol):
    methods: list[str]
    acc: dict[str, list[list[float]]]
    tasks_merged: int

    def train_input(self) -> Tensors: ...

    def integrate(self, out: TaskOutput) -> tuple[Tensors, Heads]: ...  # once per task id

    def record(self, task: int, parts: Rows) -> dict: ...

    def report(self, task: int) -> dict: ...

    def final(self) -> tuple[Tensors, Heads]: ...  # the weights and heads a run ends with (export, predict)

    def save(self, checkpoint_dir: Path, task: int, written=None) -> Path: ...

    def resume(self, checkpoint_dir: Path | None) -> list[dict]: ...


def worker_class(cfg: ExperimentConfig) -> type:
    return resolve(FAMILIES[cfg.align.family].worker)


def central_class(cfg: ExperimentConfig) -> type:
    return resolve(FAMILIES[cfg.align.family].central)
