"""Ray actors. Each wraps an engine object and calls it; none holds math of its own.

TaskWorker (GPU or CPU): fine-tunes one task from the merged adapter, returns the adapter tensors + the new
classes' sufficient statistics; evaluates head sets on the merged backbone.
MergeActor (central, light): θ0, running merged adapter, Gaussian bank, heads; merges and aligns once per task id.
"""
from __future__ import annotations

import os
from pathlib import Path

import ray
import torch

from imlca.config import ExperimentConfig, from_dict
from imlca.orchestration.wire import (heads_to_numpy, heads_to_torch, output_from_wire, output_to_wire,
                                         to_numpy, to_torch)


class LostMergeError(RuntimeError):
    """The MergeActor restarted between a task's merge and its record: the driver re-runs the task."""


def _config(tree: dict) -> ExperimentConfig:
    return from_dict(ExperimentConfig, tree)


@ray.remote
class TaskWorker:
    def __init__(self, cfg_tree: dict, threads: int):
        from imlca.engine.runner import TaskRunner

        torch.set_num_threads(max(1, threads))  # follow the CPUs this actor holds, not the node's core count
        self.runner = TaskRunner(_config(cfg_tree))

    def pid(self) -> int:
        return os.getpid()

    def setup(self) -> tuple[dict, int, int]:
        """θ0 (merge space), feature dim, number of tasks."""
        return to_numpy(self.runner.theta0()), self.runner.model.dim, self.runner.num_tasks

    def train(self, task: int, merged: dict) -> dict:
        return output_to_wire(self.runner.train(task, to_torch(merged)))

    def evaluate(self, task: int, merged_and_heads: tuple[dict, dict]) -> dict[str, dict[str, list[float]]]:
        merged, heads = merged_and_heads
        return self.runner.evaluate(task, to_torch(merged), heads_to_torch(heads))


    def robustness(self, merged_and_heads: tuple[dict, dict]) -> dict[str, float]:
        merged, heads = merged_and_heads
        return self.runner.robustness(to_torch(merged), heads_to_torch(heads))


@ray.remote
class MergeActor:
    def __init__(self, cfg_tree: dict, theta0: dict, dim: int, checkpoint_dir: str):
        """On a restart Ray calls this again with the same arguments: the state comes back from the latest
        checkpoint, so nothing merged before the crash is merged twice or lost."""
        from imlca.engine.state import MergeState  # core only: no timm, peft or data loaders in this actor

        self.state = MergeState(_config(cfg_tree), to_torch(theta0), dim)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.state.resume(self.checkpoint_dir)

    def pid(self) -> int:
        return os.getpid()

    def tasks_done(self) -> int:
        """Tasks merged and evaluated: where a run continues."""
        return len(self.state.acc[self.state.methods[0]])

    def merged(self) -> dict:
        return to_numpy(self.state.merged)

    def integrate(self, wire: dict) -> tuple[dict, dict]:
        """Apply task `wire['task']` once; a repeated delivery returns the same state unchanged."""
        merged, heads = self.state.integrate(output_from_wire(wire))
        return to_numpy(merged), heads_to_numpy(heads)

    def record(self, task: int, parts: dict[str, dict[str, list[float]]]) -> dict:
        if task >= self.state.tasks_merged:
            raise LostMergeError(f"task {task} was evaluated but its merge is not in this state (actor restarted)")
        return self.state.record(task, parts)

    def save(self, task: int) -> None:
        """Checkpoint the state after `task`; refused when a restart lost that task (the driver re-runs it)."""
        if self.tasks_done() != task + 1:
            raise LostMergeError(f"task {task} is not in this state (actor restarted); it must run again")
        self.state.save(self.checkpoint_dir, task)

    def report(self, task: int) -> dict:
        return self.state.report(task)

    def snapshot(self) -> dict:
        """What the driver needs at the end: accuracy matrices, final adapter and heads."""
        s = self.state
        return {"acc": s.acc, "merged": to_numpy(s.merged), "heads": heads_to_numpy(s.heads),
                "align_loss": s.align_loss, "train_loss": s.train_loss}
