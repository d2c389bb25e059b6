"""`lambda_sweep`: a λ sweep of k values through Tune + MLflow (align_space: one trial, one fine-tuning, k
alignments) vs one run plus k alignments done directly.

The sweep side is what a user runs: `launch_sweep` of a sweep whose align_space holds k values of align.lam, with
an empty trajectory cache, so it fine-tunes once (in a Ray task, as any cached trial does), aligns and scores every λ
and logs k MLflow runs. The reference is one run as a plain trial computes it (`run_distributed`) plus k replays of
the alignment on a trajectory computed beforehand (merge, align, score cached features), timed in this process.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

from imlca.bench.environment import LITE0, TINY, experiment_tree
from imlca.bench.measure import Measurement, Settings, divide, rounds, wall
from imlca.bench.sweep_overhead import environment

KEY = "align.lam"
VALUES = [0.0, 0.01, 0.1, 1.0, 10.0]  # k = 5


def one_run(tree: dict, root: Path) -> None:
    from imlca.orchestration.ray_step import run_distributed
    from imlca.orchestration.tune_sweep import trial_config

    run_distributed(trial_config(tree, {}), checkpoint_dir=Path(tempfile.mkdtemp(dir=root)))


def alignments(tree: dict, trajectory) -> float:
    """Seconds of k replays (every λ aligned and scored on the cached trajectory)."""
    from imlca.engine.trajectory import replay
    from imlca.orchestration.tune_sweep import trial_config

    start = time.perf_counter()
    for value in VALUES:
        replay(trial_config(tree, {KEY: value}), trajectory)
    return time.perf_counter() - start


def lambda_sweep(tree: dict, root: Path, codes: list[int]) -> None:
    from imlca.config.sweep import Sweep, SweepConfig
    from imlca.orchestration.launch import launch_sweep

    storage = tempfile.mkdtemp(dir=root)  # a fresh trajectory cache: the sweep pays for its fine-tuning
    cfg = SweepConfig(align_space={KEY: {"grid": VALUES}}, max_failures=0, storage_path=storage)
    with contextlib.redirect_stdout(io.StringIO()):
        codes.append(launch_sweep(Sweep(cfg, "bench-lambda", tree)))


def bench_lambda_sweep(settings: Settings) -> Measurement:
    from imlca.engine.trajectory import compute_trajectory
    from imlca.orchestration.cluster import ensure_ray
    from imlca.orchestration.tune_sweep import trial_config

    tree = experiment_tree(TINY if settings.quick else LITE0, 1)
    repeats = 1 if settings.quick else 2
    ensure_ray(max(2, settings.threads))
    codes: list[int] = []
    with tempfile.TemporaryDirectory(prefix="imlca-bench-lambda-") as tmp, environment(
            MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",
            TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0"):
        root = Path(tmp)
        trajectory = compute_trajectory(trial_config(tree, {}))
        one_run(tree, root)  # warm-up: Ray's worker processes and imports

        def reference():
            start = time.perf_counter()
            one_run(tree, root)
            run_s = time.perf_counter() - start
            return {"one_run": run_s, "k_alignments": alignments(tree, trajectory)}

        timings = rounds([reference, wall("lambda_sweep", lambda: lambda_sweep(tree, root, codes))], repeats,
                         warmup=0)
    ratio = divide(timings["lambda_sweep"], timings["one_run"] + timings["k_alignments"])
    details = {"k": len(VALUES), "values": VALUES, "model": tree["model"]["backbone"], "repeats": repeats,
               "image_size": tree["data"]["image_size"], "epochs": tree["train"]["epochs"]}
    note = (f"{len(VALUES)} values of {KEY} in one grouped trial (Tune + MLflow, empty trajectory cache) vs "
            "run_distributed once + k alignments on a cached trajectory")
    return Measurement(ratio, timings, {"lambda_sweep": ratio}, {"sweeps_succeeded": all(c == 0 for c in codes)},
                       details, note=note)
