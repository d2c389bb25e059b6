"""Ray-side probes for `imlca bench` (its `lora_worker` and `handoff` rows): actors set up and called the way the
protocol uses them, returning plain seconds and values. The measuring itself lives in imlca/bench."""
from __future__ import annotations

import os
import time

import ray
import torch

from imlca.orchestration.actors import TaskWorker
from imlca.orchestration.cluster import ensure_ray
from imlca.orchestration.wire import output_to_wire, to_numpy, to_torch


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
        self.worker = TaskWorker.options(num_cpus=threads).remote(tree, threads)
        self.theta0 = ray.get(self.worker.setup.remote())[0]  # numpy, as the MergeActor would send it

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


class _Sender:
    def __init__(self, tensors: dict):
        self.arrays = to_numpy(tensors)

    def send(self) -> dict:
        return self.arrays

    def send_nothing(self) -> dict:
        return {}


class _Receiver:
    def receive(self, arrays: dict) -> int:
        """Takes an adapter in as MergeActor.integrate does (a torch copy out of the read-only shared memory)."""
        return sum(t.numel() * t.element_size() for t in to_torch(arrays).values())


class HandoffProbe:
    """Two light actors passing an adapter through the object store, as train → integrate does."""

    def __init__(self, tensors: dict[str, torch.Tensor], threads: int):
        ensure_ray(max(2, threads))
        self.sender = ray.remote(num_cpus=0)(_Sender).remote(tensors)
        self.receiver = ray.remote(num_cpus=0)(_Receiver).remote()
        self.arrays = to_numpy(tensors)

    def actor_to_actor(self) -> int:
        return ray.get(self.receiver.receive.remote(self.sender.send.remote()))

    def empty_calls(self) -> int:
        return ray.get(self.receiver.receive.remote(self.sender.send_nothing.remote()))

    def put_get_copy(self) -> dict:
        return to_torch(ray.get(ray.put(self.arrays)))

    def close(self) -> None:
        for actor in (self.sender, self.receiver):
            ray.kill(actor)
