"""`lambda_sweep`: a λ sweep of k values through Tune + MLflow (align_space: one trial, one fine-tuning, k
alignments) vs one bare fine-tuning run plus k alignments.

The sweep side is what a user runs: `launch_sweep` of a sweep whose align_space holds k values of align.lam, with
an empty trajectory cache, so it fine-tunes once (in the trial process, as any cached trial does), aligns and
scores every λ and logs k MLflow runs. The reference is what DESIGN §6 names, one run + k alignments: the
end_to_end row's bare run (`run_protocol` in a new process, no actors, no checkpoints, imports included) plus k
replays of the alignment (merge, align, score cached features) on the trajectory the sweep stored, timed in this
process. Both sides run the end_to_end row's embedded-size experiment (3 epochs a task in `--quick`): on a run of
seconds the sweep would measure Tune's start-up and the imports of one more process, not a sweep. Before timing,
one tiny run starts Ray's worker processes and the MLflow store holds the experiment, as on a cluster that has run
a sweep before. The sides alternate, one value of the ratio per round.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

from imlca.bench.end_to_end import bare_run, embedded_tree
from imlca.bench.environment import TINY, experiment_tree
from imlca.bench.measure import Measurement, Samples, Seconds, Settings, divide, medians, per_round, rounds
from imlca.bench.sweep_overhead import environment

KEY = "align.lam"
VALUES = [0.0, 0.01, 0.1, 1.0, 10.0]  # k = 5


def warm_up(root: Path) -> None:
    """One tiny run on Ray: its worker processes are up before the sweep is timed."""
    from imlca.orchestration.ray_step import run_distributed
    from imlca.orchestration.tune_sweep import trial_config

    run_distributed(trial_config(experiment_tree(TINY, 1), {}), checkpoint_dir=Path(tempfile.mkdtemp(dir=root)))


def alignments(tree: dict, trajectory) -> float:
    """Seconds of k replays (every λ aligned and scored on the cached trajectory)."""
    from imlca.engine.trajectory import replay
    from imlca.orchestration.tune_sweep import trial_config

    start = time.perf_counter()
    for value in VALUES:
        replay(trial_config(tree, {KEY: value}), trajectory)
    return time.perf_counter() - start


def sweep_config(storage: str):
    from imlca.config.sweep import SweepConfig

    return SweepConfig(align_space={KEY: {"grid": VALUES}}, max_failures=0, storage_path=storage)


def lambda_sweep(tree: dict, storage: str, codes: list[int]) -> None:
    from imlca.config.sweep import Sweep
    from imlca.orchestration.launch import launch_sweep

    with contextlib.redirect_stdout(io.StringIO()):
        codes.append(launch_sweep(Sweep(sweep_config(storage), "bench-lambda", tree)))


def stored_trajectory(tree: dict, storage: str):
    """The trajectory the sweep with this storage fine-tuned, from its cache."""
    from imlca.engine.trajectory_cache import TrajectoryCache, trajectory_fingerprint
    from imlca.orchestration.storage import storage_root
    from imlca.orchestration.tune_sweep import trial_config

    cache = TrajectoryCache(sweep_config(storage).cache_location(storage_root(storage)))
    return cache.load(trajectory_fingerprint(trial_config(tree, {})))


def lambda_figures(samples: Samples) -> list[float]:
    """Per round, the sweep's seconds over (one bare run + k alignments)."""
    return per_round(samples, lambda t: divide(t["lambda_sweep"], t["bare_run"] + t["k_alignments"]))


def bench_lambda_sweep(settings: Settings) -> Measurement:
    from imlca.orchestration.cluster import ensure_ray
    from imlca.orchestration.tune_sweep import trial_config
    from imlca.tracking.store import Tracker

    tree, repeats = embedded_tree(settings), 3
    ensure_ray(max(2, settings.threads))
    codes: list[int] = []
    with tempfile.TemporaryDirectory(prefix="imlca-bench-lambda-") as tmp, environment(
            MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db",
            TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0"):
        root, storages = Path(tmp), []
        Tracker(f"sqlite:///{tmp}/mlflow.db", trial_config(tree, {}).tracking.experiment)
        warm_up(root)

        def sweep() -> Seconds:
            storages.append(tempfile.mkdtemp(dir=root))  # a fresh trajectory cache: the sweep fine-tunes
            start = time.perf_counter()
            lambda_sweep(tree, storages[-1], codes)
            return {"lambda_sweep": time.perf_counter() - start}

        def reference() -> Seconds:
            return {"bare_run": bare_run(tree)["total"],
                    "k_alignments": alignments(tree, stored_trajectory(tree, storages[-1]))}

        samples = rounds([sweep, reference], repeats, warmup=0)
    timings = medians(samples)
    details = {"k": len(VALUES), "values": VALUES, "model": tree["model"]["backbone"], "repeats": repeats,
               "image_size": tree["data"]["image_size"], "epochs": tree["train"]["epochs"], "seconds": samples}
    note = (f"{len(VALUES)} values of {KEY} in one grouped trial (Tune + MLflow, empty trajectory cache) vs one bare "
            f"run (new process, no actors, no checkpoints) + k alignments on the sweep's stored trajectory; Lite0 "
            f"r=8 at 64 px, 3 tasks x {tree['train']['epochs']} epochs")
    return Measurement(lambda_figures(samples), timings, checks={"sweeps_succeeded": all(c == 0 for c in codes)},
                       details=details, note=note)
