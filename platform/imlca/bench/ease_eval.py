"""`ease_eval`: EASE's evaluation over 10 tasks with each frozen adapter's test features kept on the worker vs
recomputed at every task (t + 1 backbone passes per image at task t), with the accuracies of both compared.

The ten tasks are trained once, outside the timing (digits_fashion20 in 10 tasks of 2 classes, the tiny two-block
ViT at 16 px, one epoch on 10 images per class); a round evaluates all ten tasks in order from an empty cache."""
from __future__ import annotations

import copy

from imlca.bench.environment import TINY, experiment_tree
from imlca.bench.measure import Measurement, Settings, divide, medians, per_round, rounds, wall


def ease_tree(settings: Settings) -> dict:
    tree = experiment_tree(TINY, settings.threads)
    tree["name"] = "bench-ease"
    tree["align"] = {"method": "ease"}
    tree["data"] = {**tree["data"], "benchmark": "digits_fashion20", "task_sizes": [2] * 10, "train_per_class": 10,
                    "test_per_class": 20 if settings.quick else 100}
    tree["train"] = {**tree["train"], "epochs": 1}
    return tree


def bench_ease_eval(settings: Settings) -> Measurement:
    import torch

    from imlca.config import ExperimentConfig, from_dict
    from imlca.engine.ease_runner import EASERunner
    from imlca.engine.ease_state import EASEState

    torch.set_num_threads(settings.threads)
    tree = ease_tree(settings)
    cfg = from_dict(ExperimentConfig, tree)
    plain_tree = copy.deepcopy(tree)
    plain_tree["ease"] = {"cache_features": False}
    cached, plain = EASERunner(cfg), EASERunner(from_dict(ExperimentConfig, plain_tree))
    state, states = EASEState(cfg, {}, cached.model.dim), []
    for task in range(cached.num_tasks):
        weights, heads = state.integrate(cached.train(task, state.train_input()))
        states.append(({k: v.clone() for k, v in weights.items()}, {m: list(h) for m, h in heads.items()}))
    rows: dict[str, list] = {}

    def evaluate_all(runner: EASERunner, name: str) -> None:
        runner.cache.clear()
        rows[name] = [runner.evaluate(t, *states[t])["test"] for t in range(len(states))]

    repeats = 2 if settings.quick else 3
    samples = rounds([wall("cached", lambda: evaluate_all(cached, "cached")),
                      wall("recomputed", lambda: evaluate_all(plain, "recomputed"))], repeats)
    figures = per_round(samples, lambda times: divide(times["recomputed"], times["cached"]))
    details = {"tasks": len(states), "test_per_class": tree["data"]["test_per_class"], "threads": settings.threads,
               "repeats": repeats}
    note = (f"10 tasks of digits_fashion20, vit_test_tiny at 16 px, {tree['data']['test_per_class']} test images per "
            f"class, {settings.threads} thread(s)")
    times = medians(samples)
    return Measurement(figures, times, {"speed_up": divide(times["recomputed"], times["cached"])},
                       {"same_accuracies": rows["cached"] == rows["recomputed"]}, details, note=note)
