"""Ray's cost on the training loop: `lora_worker` (training inside a TaskWorker vs in this process).
The actors come from imlca.orchestration.probes (the only package that imports Ray); this module only measures."""
from __future__ import annotations

import os
import statistics
import time

import torch

from imlca.bench.environment import LITE0, TINY, experiment_tree
from imlca.bench.measure import Measurement, Samples, Seconds, Settings, divide, medians, per_round, rounds
from imlca.orchestration.wire import to_torch


def worker_figures(samples: Samples) -> tuple[list[float], dict[str, float]]:
    """Per round, in_actor / bare (the figure held to the goal); the medians of it and of actor_call / bare."""
    def ratio(name: str) -> list[float]:
        return per_round(samples, lambda times: divide(times[name], times["bare"]))

    return ratio("in_actor"), {name: statistics.median(ratio(name)) for name in ("in_actor", "actor_call")}


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

        samples = rounds([bare, in_actor], repeats)
        nice = {"driver_niceness": os.nice(0), "actor_niceness": probe.niceness()}
    finally:
        probe.close()
    same = torch.allclose(torch.tensor(losses["bare"]), torch.tensor(losses["actor"]), rtol=1e-4, atol=0)
    details = {"model": tree["model"]["backbone"], "image_size": tree["data"]["image_size"],
               "epochs": tree["train"]["epochs"], "threads": n, "repeats": repeats, "losses": losses, **nice}
    figures, ratios = worker_figures(samples)
    note = (f"task 0 of {tree['model']['backbone']} at {tree['data']['image_size']} px, {n} thread(s); in_actor timed "
            f"inside the TaskWorker (niceness {nice['actor_niceness']}, this process {nice['driver_niceness']})")
    return Measurement(figures, medians(samples), ratios, {"same_losses": same}, details, note=note)
