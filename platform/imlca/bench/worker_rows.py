"""Ray's costs on the data path: `lora_worker` (training inside a TaskWorker) and `handoff` (the object store).
The actors come from imlca.orchestration.probes (the only package that imports Ray); this module only measures."""
from __future__ import annotations

import os
import time

import torch

from imlca.bench.environment import LITE0, TINY, experiment_tree
from imlca.bench.measure import Measurement, Seconds, Settings, divide, rounds, wall
from imlca.bench.merge_speed import adapter
from imlca.orchestration.wire import to_torch


def bench_lora_worker(settings: Settings) -> Measurement:
    """TaskRunner.train of task 0 (train_task + the new classes' statistics) in this process vs in a TaskWorker
    holding as many CPUs as this process has torch threads. Actor start-up is excluded from both times."""
    from imlca.config import ExperimentConfig, from_dict
    from imlca.engine.runner import TaskRunner
    from imlca.orchestration.probes import WorkerProbe

    n, repeats = settings.threads, (3 if settings.quick else 5)
    tree = experiment_tree(TINY if settings.quick else LITE0, n)
    probe = WorkerProbe(tree, n)
    try:
        runner = TaskRunner(from_dict(ExperimentConfig, tree))
        merged = to_torch(probe.theta0)
        losses: dict[str, list[float]] = {}

        def bare() -> Seconds:
            start = time.perf_counter()
            losses["bare"] = runner.train(0, merged).losses
            return {"bare": time.perf_counter() - start}

        def in_actor() -> Seconds:
            inside, call, losses["actor"] = probe.train(0)
            return {"in_actor": inside, "actor_call": call}

        timings = rounds([bare, in_actor], repeats)
        nice = {"driver_niceness": os.nice(0), "actor_niceness": probe.niceness()}
    finally:
        probe.close()
    same = torch.allclose(torch.tensor(losses["bare"]), torch.tensor(losses["actor"]), rtol=1e-4, atol=0)
    details = {"model": tree["model"]["backbone"], "image_size": tree["data"]["image_size"],
               "epochs": tree["train"]["epochs"], "threads": n, "repeats": repeats, "losses": losses, **nice}
    ratios = {"in_actor": divide(timings["in_actor"], timings["bare"]),
              "actor_call": divide(timings["actor_call"], timings["bare"])}
    note = (f"task 0 of {tree['model']['backbone']} at {tree['data']['image_size']} px, {n} thread(s); in_actor timed "
            f"inside the TaskWorker (niceness {nice['actor_niceness']}, this process {nice['driver_niceness']})")
    return Measurement(ratios["in_actor"], timings, ratios, {"same_losses": same}, details, note=note)


def bench_handoff(settings: Settings) -> Measurement:
    """Actor → object store → actor (`receiver.receive(sender.send())`, as run_task chains train → integrate) vs
    an in-process clone of the same tensors. Also: the same two calls carrying nothing (the fixed cost of two
    actor calls), and ray.put + ray.get + copy within this process."""
    from imlca.orchestration.probes import HandoffProbe

    layers, repeats = 12, (5 if settings.quick else 20)
    tensors = adapter("factors", layers, torch.Generator().manual_seed(0))
    probe = HandoffProbe(tensors, settings.threads)
    try:
        size = probe.actor_to_actor()
        timings = rounds([
            wall("clone", lambda: {k: v.clone() for k, v in tensors.items()}),
            wall("actor_to_actor", probe.actor_to_actor),
            wall("empty_calls", probe.empty_calls),
            wall("put_get_copy", probe.put_get_copy),
        ], repeats, warmup=2)
    finally:
        probe.close()
    ratios = {"actor_to_actor": divide(timings["actor_to_actor"], timings["clone"]),
              "put_get_copy": divide(timings["put_get_copy"], timings["clone"]),
              "transfer_without_call_cost": divide(timings["actor_to_actor"] - timings["empty_calls"],
                                                   timings["clone"])}
    sent = sum(t.numel() * t.element_size() for t in tensors.values())
    details = {"bytes": sent, "layers": layers, "repeats": repeats}
    note = f"ViT-B/16 r=64 qkv adapter, {sent / 1e6:.1f} MB in {len(tensors)} arrays"
    return Measurement(ratios["actor_to_actor"], timings, ratios, {"all_bytes_arrived": size == sent}, details,
                       note=note)
