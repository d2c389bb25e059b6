"""Ray-side probes for `imlca bench` (its `lora_worker` row): actors set up and called the way the
protocol uses them, returning plain seconds and values. The measuring itself lives in imlca/bench."""
from __future__ import annotations

import os
import time

import ray

from imlca.orchestration.actors import TaskWorker
from imlca.orchestration.cluster import ensure_ray
from imlca.orchestration.wire import output_to_wire, to_torch


def _train_in_actor(worker, task: int, merged: dict) -> tuple[float, list[float]]:
    """Runs in the TaskWorker process (`__ray_call__`): what TaskWorker.train does, the training call timed there."""
    tensors = to_torch(merged)
    start = time.perf_counter()
    out = worker.runner.train(task, tensors)
    seconds = time.perf_counter() - start
    return seconds, output_to_wire(out)["losses"]


def _niceness(_actor) -> int:
    return os.nice(0)


class WorkerProbe:
    """A TaskWorker holding `threads` CPUs (actor start-up is not part of any timing)."""

    def __init__(self, tree: dict, threads: int):
        ensure_ray(max(2, threads))
        self.worker = TaskWorker.options(num_cpus=threads).remote()
        ray.get(self.worker.configure.remote("probe", tree, threads))
        self.theta0 = ray.get(self.worker.setup.remote())[0]  # numpy, as the CentralActor would send it

    def train(self, task: int) -> tuple[float, float, list[float]]:
        """(seconds inside the actor, seconds of the whole call, per-epoch losses) of TaskRunner.train(task)."""
        start = time.perf_counter()
        seconds, losses = ray.get(self.worker.__ray_call__.remote(_train_in_actor, task, self.theta0))
        return seconds, time.perf_counter() - start, losses

    def niceness(self) -> int:
        """The actor process's scheduling niceness (Ray starts its workers at 15 unless told otherwise)."""
        return ray.get(self.worker.__ray_call__.remote(_niceness))

    def close(self) -> None:
        ray.kill(self.worker)
