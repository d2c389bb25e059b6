"""Ray's costs on the data path, for `imlca bench`: `lora_worker` (training inside a TaskWorker) and `handoff`
(the object store). Here rather than in imlca/bench because Ray is imported in orchestration/ only; the bench
registry imports this module only when one of these benchmarks runs."""
from __future__ import annotations

import os
import time

import ray
import torch

from imlca.bench.environment import LITE0, TINY, experiment_tree
from imlca.bench.measure import Measurement, Seconds, Settings, divide, rounds, wall
from imlca.bench.merge_speed import adapter
from imlca.orchestration.wire import output_to_wire, to_numpy, to_torch
from imlca.orchestration.driver import ensure_ray


def train_in_actor(worker, task: int, merged: dict) -> tuple[float, dict]:
    """Runs in the TaskWorker process (`__ray_call__`): what TaskWorker.train does, the training call timed there."""
    tensors = to_torch(merged)
    start = time.perf_counter()
    out = worker.runner.train(task, tensors)
    seconds = time.perf_counter() - start
    return seconds, output_to_wire(out)


def niceness(_actor) -> int:
    """The scheduling niceness of the calling process (Ray starts its workers at 15 unless told otherwise)."""
    return os.nice(0)


def bench_lora_worker(settings: Settings) -> Measurement:
    """TaskRunner.train of task 0 (train_task + the new classes' statistics) in this process vs in a TaskWorker
    holding as many CPUs as this process has torch threads. Actor start-up is excluded from both times."""
    from imlca.config import ExperimentConfig, from_dict
    from imlca.engine.runner import TaskRunner
    from imlca.orchestration.actors import TaskWorker

    n, repeats = settings.threads, (3 if settings.quick else 5)
    tree = experiment_tree(TINY if settings.quick else LITE0, n)
    ensure_ray(max(2, n))
    worker = TaskWorker.options(num_cpus=n).remote(tree, n)
    try:
        theta0 = ray.get(worker.setup.remote())[0]
        runner = TaskRunner(from_dict(ExperimentConfig, tree))
        merged = to_torch(theta0)
        losses: dict[str, list[float]] = {}

        def bare() -> Seconds:
            start = time.perf_counter()
            losses["bare"] = runner.train(0, merged).losses
            return {"bare": time.perf_counter() - start}

        def in_actor() -> Seconds:
            start = time.perf_counter()
            seconds, wire = ray.get(worker.__ray_call__.remote(train_in_actor, 0, theta0))
            losses["actor"] = wire["losses"]
            return {"in_actor": seconds, "actor_call": time.perf_counter() - start}

        timings = rounds([bare, in_actor], repeats)
        nice = {"driver_niceness": niceness(None), "actor_niceness": ray.get(worker.__ray_call__.remote(niceness))}
    finally:
        ray.kill(worker)
    same = torch.allclose(torch.tensor(losses["bare"]), torch.tensor(losses["actor"]), rtol=1e-4, atol=0)
    details = {"model": tree["model"]["backbone"], "image_size": tree["data"]["image_size"],
               "epochs": tree["train"]["epochs"], "threads": n, "repeats": repeats, "losses": losses, **nice}
    ratios = {"in_actor": divide(timings["in_actor"], timings["bare"]),
              "actor_call": divide(timings["actor_call"], timings["bare"])}
    note = (f"task 0 of {tree['model']['backbone']} at {tree['data']['image_size']} px, {n} thread(s); in_actor timed "
            f"inside the TaskWorker (niceness {nice['actor_niceness']}, this process {nice['driver_niceness']})")
    return Measurement(ratios["in_actor"], timings, ratios, {"same_losses": same}, details, note=note)


class Sender:
    """Holds a ViT-B r=64 qkv adapter and hands it out as TaskWorker.train does (numpy arrays)."""

    def __init__(self, layers: int):
        self.adapter = adapter("factors", layers, torch.Generator().manual_seed(0))

    def send(self) -> dict:
        return to_numpy(self.adapter)

    def send_nothing(self) -> dict:
        return {}


class Receiver:
    """Takes an adapter in as MergeActor.integrate does (a torch copy out of the read-only shared memory)."""

    def receive(self, arrays: dict) -> int:
        return sum(t.numel() * t.element_size() for t in to_torch(arrays).values())


def bench_handoff(settings: Settings) -> Measurement:
    """Actor → object store → actor (`receiver.receive(sender.send())`, as run_task chains train → integrate) vs
    an in-process clone of the same tensors. Also: the same two calls carrying nothing (the fixed cost of two
    actor calls), and ray.put + ray.get + copy within this process."""
    layers, repeats = 12, (5 if settings.quick else 20)
    ensure_ray(max(2, settings.threads))
    sender = ray.remote(num_cpus=0)(Sender).remote(layers)
    receiver = ray.remote(num_cpus=0)(Receiver).remote()
    try:
        tensors = adapter("factors", layers, torch.Generator().manual_seed(0))
        arrays = to_numpy(tensors)
        size = ray.get(receiver.receive.remote(sender.send.remote()))
        timings = rounds([
            wall("clone", lambda: {k: v.clone() for k, v in tensors.items()}),
            wall("actor_to_actor", lambda: ray.get(receiver.receive.remote(sender.send.remote()))),
            wall("empty_calls", lambda: ray.get(receiver.receive.remote(sender.send_nothing.remote()))),
            wall("put_get_copy", lambda: to_torch(ray.get(ray.put(arrays)))),
        ], repeats, warmup=2)
    finally:
        for actor in (sender, receiver):
            ray.kill(actor)
    ratios = {"actor_to_actor": divide(timings["actor_to_actor"], timings["clone"]),
              "put_get_copy": divide(timings["put_get_copy"], timings["clone"]),
              "transfer_without_call_cost": divide(timings["actor_to_actor"] - timings["empty_calls"],
                                                   timings["clone"])}
    sent = sum(t.numel() * t.element_size() for t in tensors.values())
    details = {"bytes": sent, "layers": layers, "repeats": repeats}
    note = f"ViT-B/16 r=64 qkv adapter, {sent / 1e6:.1f} MB in {len(tensors)} arrays"
    return Measurement(ratios["actor_to_actor"], timings, ratios, {"all_bytes_arrived": size == sent}, details,
                       note=note)
