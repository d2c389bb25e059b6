"""`memory`: peak resident memory of a grouped λ trial with 12 variants / the same trial with 1, at a paper-size
Gaussian bank (200 classes × 768-d statistics).

The trial is what a trial of a grouped λ sweep runs once its trajectory is cached (orchestration/tune_cached.py):
read the trajectory from the cache, then replay every variant on it task by task (align, score). The trajectory is
synthetic: random features with a mean per class, their float64 statistics, a head per task; no backbone. Each
measurement is a fresh Python process (`python -m imlca.bench.memory`) whose peak RSS is the figure; rounds
alternate 12 variants and 1. Beside the ratio: one variant's peak in MB, and the plan's figure for the same trial
(planning/memory.py) over the measured peaks.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from imlca.bench.measure import Measurement, Settings, divide
from imlca.config import ExperimentConfig, from_dict
from imlca.core.gaussian_bank import GaussianBank
from imlca.engine.trajectory import TaskStep, Trajectory
from imlca.planning.memory import trial_memory
from imlca.planning.workload import TaskWork, TrialWork

LAMBDAS = [0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]  # sweeps/paper/lambda_search.yaml
FINGERPRINT = "memory-bench"
STAT_SAMPLES, TEST_PER_CLASS = 16, 4  # features per class behind the statistics; cached test features per class


def synthetic_trajectory(classes: int, dim: int, tasks: int, seed: int = 0) -> Trajectory:
    """`tasks` equal tasks over `classes` classes of `dim`-d features: per task, its classes' float64 statistics, a
    head, and test features of every class seen so far (as a recorded trajectory holds them)."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=gen, dtype=torch.float64)  # [C, D]
    size = classes // tasks
    trajectory = Trajectory({"w": torch.zeros(8)}, dim, [(t * size, (t + 1) * size) for t in range(tasks)])
    for t, (lo, hi) in enumerate(trajectory.bounds):
        labels = torch.arange(lo, hi).repeat_interleave(STAT_SAMPLES)  # [n_t·16]
        bank = GaussianBank(dim)
        bank.update(means[labels] + torch.randn(len(labels), dim, generator=gen, dtype=torch.float64), labels)
        seen = torch.arange(hi).repeat_interleave(TEST_PER_CLASS)  # [hi·4] class positions
        test = ((means[seen] + torch.randn(len(seen), dim, generator=gen, dtype=torch.float64)).float(), seen)
        head = 0.01 * torch.randn(hi - lo, dim, generator=gen)  # [n_t, D]
        adapter = {"w": torch.full((8,), float(t))}
        merged = {"w": adapter["w"].clone()}
        trajectory.steps.append(TaskStep(t, adapter, merged, head, bank.state_dict(), [0.0], {"test": test}))
    return trajectory


def trial_config(samples: int) -> ExperimentConfig:
    """IM+LCA alone, one epoch: the bank's memory is measured, not the alignment's speed."""
    return from_dict(ExperimentConfig, {"align": {"method": "im_lca", "compare": [], "samples_per_class": samples,
                                                  "epochs": 1, "batch_size": 256}})


def planned_bytes(trajectory: Trajectory, variants: int, samples: int) -> float:
    """The plan's peak for this trial: `trial_memory` of its work, as `imlca plan` computes it."""
    tasks = [TaskWork(0, len(s.features["test"][1]), 0, hi) for s, (_, hi) in zip(trajectory.steps,
                                                                                 trajectory.bounds)]
    cfg = trial_config(samples)
    work = TrialWork({}, cfg, tasks, "data", variants, variants, banks=1)
    return trial_memory(work, trajectory.dim, cached=True).peak


def status_bytes(field: str) -> int:
    """A field of /proc/self/status in bytes: VmHWM is the peak RSS of this process image (getrusage's ru_maxrss
    would carry over the parent's peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field} (the memory row needs Linux)")


def run_trial(cache: str, variants: int, samples: int) -> dict:
    """In this process: the grouped trial; its peak RSS and its RSS before the trajectory is read (bytes)."""
    from imlca.engine.allocator import return_large_blocks
    from imlca.engine.trajectory import Replay
    from imlca.engine.trajectory_cache import TrajectoryCache

    start = status_bytes("VmHWM")
    trajectory = TrajectoryCache(cache).load(FINGERPRINT)
    fixed = return_large_blocks()  # as a grouped trial does once it holds its trajectory
    cfg = trial_config(samples)
    runs = Replay({f"lam={lam}": dataclasses.replace(cfg, align=dataclasses.replace(cfg.align, lam=lam))
                   for lam in LAMBDAS[:variants]}, trajectory)
    last = [runs.step(step) for step in trajectory.steps][-1]
    return {"start_bytes": start, "peak_bytes": status_bytes("VmHWM"), "large_blocks_returned": fixed,
            "avg_acc": {name: report["avg_acc"] for name, report in last.items()}}


def measure(cache: str, variants: int, samples: int, threads: int) -> dict:
    """`run_trial` in a fresh process."""
    code = (f"import json, torch; torch.set_num_threads({threads}); from imlca.bench.memory import run_trial; "
            f"print(json.dumps(run_trial({cache!r}, {variants}, {samples})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {variants}-variant trial failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_memory(settings: Settings) -> Measurement:
    classes, dim = 200, 768
    tasks, samples, repeats = (4, 4, 2) if settings.quick else (10, 16, 3)
    with tempfile.TemporaryDirectory(prefix="imlca-bench-memory-") as folder:
        from imlca.engine.trajectory_cache import TrajectoryCache

        trajectory = synthetic_trajectory(classes, dim, tasks)
        TrajectoryCache(folder).store(FINGERPRINT, trajectory)
        plan = {k: planned_bytes(trajectory, k, samples) for k in (1, len(LAMBDAS))}
        del trajectory
        runs: dict[int, list[dict]] = {1: [], len(LAMBDAS): []}
        for _ in range(repeats):
            for k in runs:
                runs[k].append(measure(folder, k, samples, settings.threads))
    many, one = runs[len(LAMBDAS)], runs[1]
    peak = {k: statistics.median(r["peak_bytes"] for r in found) for k, found in runs.items()}  # bytes
    same = all(r["avg_acc"]["lam=0.0"] == one[0]["avg_acc"]["lam=0.0"] for r in many + one)
    return Measurement(
        [divide(m["peak_bytes"], o["peak_bytes"]) for m, o in zip(many, one)],
        ratios={f"plan/measured, {k} variant(s)": plan[k] / peak[k] for k in runs},
        checks={"λ = 0 scores alike with 1 and 12 variants": same},
        details={"peak_mb": {k: [r["peak_bytes"] / 1e6 for r in found] for k, found in runs.items()},
                 "process_before_trial_mb": [r["start_bytes"] / 1e6 for r in one + many],
                 "plan_mb": {k: v / 1e6 for k, v in plan.items()}, "classes": classes, "dim": dim, "tasks": tasks,
                 "samples_per_class": samples},
        note=f"{classes} classes × {dim}-d, {tasks} tasks, {samples} samples/class: peak RSS (median) of one variant "
             f"{peak[1] / 1e6:.0f} MB (plan {plan[1] / 1e6:.0f} MB), of {len(LAMBDAS)} {peak[len(LAMBDAS)] / 1e6:.0f} "
             f"MB (plan {plan[len(LAMBDAS)] / 1e6:.0f} MB)")
