"""Wall-clock timing of whole runs, for the `end_to_end`, `task_overhead` and `sweep` benchmarks: a distributed run
(Ray actors, per-task checkpoints), the same on warm actors, the same run in this process, and when each trial of
a sweep completed. Here because Ray is imported in orchestration/ only. The caller makes sure Ray is up
(`ensure_ray`) before timing."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import ray
from ray import tune

from imlca.config import ExperimentConfig, from_dict


def _timed(run, cfg: ExperimentConfig, **kwargs) -> dict:
    """→ {"total": s, "tasks": [s per task, from the start / the previous task's report], "stamps": [the start,
    then each task's report], "summary": ..., "acc": ...}. Stamps are time.time(), the clock the actors' busy
    intervals are on (processes on one node read it alike)."""
    stamps = [time.time()]
    result = run(cfg, on_task=lambda report: stamps.append(time.time()), **kwargs)
    total = time.time() - stamps[0]
    tasks = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"total": total, "tasks": tasks, "stamps": stamps, "summary": result.summary, "acc": result.acc}


def distributed_run(tree: dict) -> dict:
    """run_distributed with a fresh checkpoint folder (as `imlca run --distributed --out DIR`), on new actors; also
    "intervals": [(start, end) of every call in which the TaskWorker or the CentralActor computed], read from the
    actors once the run is over (they are kept alive for that in a pool of this call's own, then ended)."""
    from imlca.orchestration.ray_step import run_distributed
    from imlca.orchestration.worker_pool import WorkerPool

    pool = WorkerPool()  # empty: the run starts new actors, and hands them back here instead of ending them
    try:
        with tempfile.TemporaryDirectory(prefix="imlca-e2e-") as tmp:
            timed = _timed(run_distributed, from_dict(ExperimentConfig, tree), checkpoint_dir=Path(tmp), pool=pool)
        (pair,) = pool.idle.values()
        worker, central = ray.get([pair.worker.busy_intervals.remote(), pair.central.busy_intervals.remote()])
    finally:
        pool.close()
    return {**timed, "intervals": sorted(worker + central)}


def in_process_run(tree: dict) -> dict:
    """run_protocol in this process, without checkpoints: the same computation with no Ray and no files."""
    from imlca.engine.protocol import run_protocol

    return _timed(run_protocol, from_dict(ExperimentConfig, tree))


class WarmRuns:
    """run_distributed one run after another on the same actors (a WorkerPool in this driver, as a sweep's trial
    process keeps one): a warm trial without Tune and MLflow. `close` ends the actors."""

    def __init__(self):
        from imlca.orchestration.worker_pool import WorkerPool

        self.pool = WorkerPool()

    def run(self, tree: dict) -> dict:
        from imlca.orchestration.ray_step import run_distributed

        with tempfile.TemporaryDirectory(prefix="imlca-warm-") as tmp:
            return _timed(run_distributed, from_dict(ExperimentConfig, tree), checkpoint_dir=Path(tmp), pool=self.pool)

    def close(self) -> None:
        self.pool.close()


class TrialClock(tune.Callback):
    """On the driver: when each trial of a sweep completed (perf_counter seconds)."""

    def __init__(self):
        self.completed: list[float] = []

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.completed.append(time.perf_counter())
