"""`sweep`: the fixed seconds per trial that Tune, the actors and MLflow add on a warm cluster.

One sweep of n trials one at a time (`launch_sweep`, MLflow in a sqlite file; Tune's max_concurrent_trials=1, so
no trial hides behind another on the second core), timed on the driver from one trial's completion to the next:
trials 2..n, each on the trial process, placement group, TaskWorker and CentralActor kept from the trial before.
The figure, one value per warm trial: its cycle less the same run in this process (`run_protocol`, as many threads
as the TaskWorker holds CPUs; the median of its repeats): what a trial costs beyond its computation. Trial 1 (Tune's start-up, new actor processes
importing torch, timm and peft) is reported as `first_trial`, outside the figure.

The split, in the details: `direct_warm` is `run_distributed` on warm actors in this driver (no Tune, no MLflow),
alternated with the in-process run: `actors_s` = direct_warm − in_process (hand-offs, per-task checkpoints),
`tune_mlflow_s` = trial cycle − direct_warm. Every trial does the same work: the swept key changes only the heads.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from imlca.bench.environment import TINY, experiment_tree
from imlca.bench.measure import Measurement, Settings, medians, rounds

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


def tune_sweep(tree: dict, values: list[float], root: Path, callbacks: tuple) -> int:
    from imlca.config.sweep import Sweep, SweepConfig
    from imlca.orchestration.launch import launch_sweep

    storage = tempfile.mkdtemp(dir=root)
    cfg = SweepConfig(space={KEY: {"grid": values}}, max_concurrent_trials=1, max_failures=0, storage_path=storage)
    with contextlib.redirect_stdout(io.StringIO()):  # its "best trial" lines would break up the table
        return launch_sweep(Sweep(cfg, "bench-sweep", tree), callbacks=callbacks)


def direct_sides(tree: dict, repeats: int) -> tuple[dict[str, list[float]], bool]:
    """Seconds of the in-process run and of run_distributed on warm actors, alternated after a warm-up round
    (imports; the actors' start), per round; whether every run gave the same accuracy matrices."""
    from imlca.orchestration.run_timing import WarmRuns, in_process_run

    warm, runs = WarmRuns(), []

    def timed(name: str, run) -> Callable[[], dict[str, float]]:
        def once() -> dict[str, float]:
            runs.append(run(tree))
            return {name: runs[-1]["total"]}
        return once

    try:
        samples = rounds([timed("in_process", in_process_run), timed("direct_warm", warm.run)], repeats)
    finally:
        warm.close()  # its TaskWorker would hold a CPU the sweep's trials need
    return samples, all(run["acc"] == runs[0]["acc"] for run in runs)


def sweep_figures(completed: list[float], in_process: list[float]) -> list[float]:
    """Seconds each warm trial (2..n: from one completion to the next) took beyond the in-process run's median."""
    baseline = statistics.median(in_process)
    return [b - a - baseline for a, b in zip(completed, completed[1:])]


def bench_sweep(settings: Settings) -> Measurement:
    # tiny runs take seconds and Tune's start-up a minute: more trials and rounds cost little and tame the noise
    values = [0.1, 0.2, 0.3, 0.4, 0.5] if settings.quick else [round(0.1 * i, 1) for i in range(1, 10)]
    repeats = 3 if settings.quick else 5
    tree = experiment_tree(TINY, settings.threads)
    from imlca.orchestration.cluster import ensure_ray  # Ray is imported by orchestration/ only
    from imlca.orchestration.run_timing import TrialClock

    ensure_ray(max(2, settings.threads))
    clock = TrialClock()
    with tempfile.TemporaryDirectory(prefix="imlca-bench-sweep-") as tmp, environment(
            MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",  # launch_sweep reads it before the config's URI
            TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0"):  # a warning per task of tiny runs
        samples, same = direct_sides(tree, repeats)
        start = time.perf_counter()
        code = tune_sweep(tree, values, Path(tmp), (clock,))
    figures, timings = sweep_figures(clock.completed, samples["in_process"]), medians(samples)
    cycles = [b - a for a, b in zip(clock.completed, clock.completed[1:])]  # trials 2..n, warm
    timings.update(trial_cycle=statistics.median(cycles) if cycles else math.inf,
                   first_trial=clock.completed[0] - start if clock.completed else math.inf)
    details = {"trials": len(values), "swept": KEY, "values": values, "repeats": repeats, "cycles": cycles,
               "actors_s": timings["direct_warm"] - timings["in_process"],
               "tune_mlflow_s": timings["trial_cycle"] - timings["direct_warm"], "tune_concurrency": 1}
    note = (f"tiny config, {len(values)} trials one at a time: trials 2..{len(values)} {timings['trial_cycle']:.1f} "
            f"s each (warm actors) vs {timings['in_process']:.1f} s in-process; actors {details['actors_s']:+.2f} s, "
            f"Tune + MLflow {details['tune_mlflow_s']:+.2f} s; trial 1 {timings['first_trial']:.1f} s")
    checks = {"sweep_succeeded": code == 0 and len(clock.completed) == len(values), "warm_same_accuracy": same}
    return Measurement(figures, timings, checks=checks, details=details, note=note)
