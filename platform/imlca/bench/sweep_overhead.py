"""`sweep`: the fixed seconds per trial that Ray Tune + MLflow (launch_sweep) add to the same N runs called one
after another: (sweep time − direct time) / N.

The direct side calls `run_distributed` (with a checkpoint folder, as `python -m imlca run --distributed` does),
because that is what every Tune trial calls: the difference is then Tune and MLflow alone, not Ray's actors
(those are `lora_worker`, `end_to_end` and `task_overhead`). Tune runs with max_concurrent_trials=1 so that both
sides do the same work with the same concurrency (one TaskWorker of one CPU at a time); otherwise two concurrent
trials on two CPUs would hide Tune's overhead behind parallelism (and measure the machine's second core, not Tune).
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from imlca.bench.environment import TINY, experiment_tree
from imlca.bench.measure import Measurement, Settings, divide, rounds, wall

KEY = "align.lam"  # the swept key: it changes only the heads, so every trial does the same amount of work


@contextlib.contextmanager
def environment(**values: str):
    """Set environment variables for the block, then restore what was there."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


def direct_runs(tree: dict, values: list[float], root: Path) -> None:
    from imlca.orchestration.ray_step import run_distributed
    from imlca.orchestration.tune_sweep import trial_config

    for value in values:  # a fresh checkpoint folder each time: a used one would resume instead of training
        run_distributed(trial_config(tree, {KEY: value}), checkpoint_dir=Path(tempfile.mkdtemp(dir=root)))


def tune_sweep(tree: dict, values: list[float], root: Path, codes: list[int]) -> None:
    from imlca.orchestration.launch import launch_sweep
    from imlca.config.sweep import Sweep, SweepConfig

    storage = tempfile.mkdtemp(dir=root)
    cfg = SweepConfig(space={KEY: {"grid": values}}, max_concurrent_trials=1, max_failures=0, storage_path=storage)
    with contextlib.redirect_stdout(io.StringIO()):  # its "best trial" lines would break up the table
        codes.append(launch_sweep(Sweep(cfg, "bench-sweep", tree)))


def bench_sweep(settings: Settings) -> Measurement:
    values, repeats = [0.1, 0.5], (1 if settings.quick else 2)
    tree = experiment_tree(TINY, 1)
    from imlca.orchestration.cluster import ensure_ray  # Ray is imported by orchestration/ only

    ensure_ray(max(2, settings.threads))
    codes: list[int] = []
    with tempfile.TemporaryDirectory(prefix="imlca-bench-sweep-") as tmp, environment(
            MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",  # launch_sweep reads it before the config's URI
            TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0"):  # a warning per task of tiny runs
        root = Path(tmp)
        direct_runs(tree, values[:1], root)  # warm-up: Ray's worker processes and imports
        timings = rounds([wall("direct", lambda: direct_runs(tree, values, root)),
                          wall("tune_mlflow", lambda: tune_sweep(tree, values, root, codes))], repeats, warmup=0)
    per_trial = (timings["tune_mlflow"] - timings["direct"]) / len(values)  # the row's figure, in seconds
    ratios = {"tune_mlflow": divide(timings["tune_mlflow"], timings["direct"])}
    details = {"trials": len(values), "swept": KEY, "values": values, "repeats": repeats,
               "direct": "run_distributed one after another", "tune_concurrency": 1, "time_ratio": ratios}
    note = (f"{len(values)} trials of the tiny config over {KEY}; Tune runs one trial at a time, the direct side "
            "calls run_distributed one run after another")
    return Measurement(per_trial, timings, {"per_trial_s": per_trial}, {"sweeps_succeeded": all(c == 0 for c in codes)},
                       details, note=note)
