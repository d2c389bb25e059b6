"""Warm actors across sweep trials: the second trial runs on the first trial's TaskWorker, with a new pair's numbers."""
import psutil
import pytest
from ray import tune

from imlca.config import merge_trees, read_config_tree
from imlca.config.sweep import Sweep, SweepConfig
from imlca.orchestration.ray_step import run_distributed
from imlca.orchestration.tune_sweep import fit, trial_config

from conftest import TINY


def our_task_workers() -> set[int]:
    """TaskWorker processes of this test's cluster (the local cluster's raylet is a child of this process; other
    Ray clusters on the machine are not)."""
    pids = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if " ".join(proc.cmdline()).startswith("ray::TaskWorker"):
                pids.add(proc.pid)
        except psutil.NoSuchProcess:  # ended since the listing
            pass
    return pids


class Recorder(tune.Callback):
    """Per trial: its reports, and the TaskWorker processes alive at each of them."""

    def __init__(self):
        self.reports, self.workers = {}, {}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.reports.setdefault(trial.config["seed"], []).append(result)
        self.workers.setdefault(trial.config["seed"], set()).update(our_task_workers())


def test_the_second_trial_reuses_the_first_trials_worker_with_a_cold_workers_numbers(ray_cluster, tmp_path):
    base = merge_trees(read_config_tree(TINY), {"name": "warm", "train.epochs": 1, "align.epochs": 1})
    # trial 1 another seed: a model, adapter or RNG state left behind would change trial 2's numbers
    cfg = SweepConfig(space={"seed": {"grid": [7, 1993]}}, max_concurrent_trials=1, max_failures=0,
                      storage_path=str(tmp_path / "ray_results"))
    recorder = Recorder()
    grid = fit(Sweep(cfg, "warm", base), lambda sweep: [recorder])
    assert not grid.errors
    first, second = recorder.workers[7], recorder.workers[1993]
    assert len(first) == 1 and second == first  # one TaskWorker process served both trials

    cold = run_distributed(trial_config(base, {"seed": 1993}), checkpoint_dir=tmp_path / "cold")
    warm = recorder.reports[1993]
    assert [r["task"] for r in warm] == [0, 1, 2]
    for report, expected in zip(warm, cold.reports):  # every method's accuracy row after every task, exactly
        assert {key: report[key] for key in expected} == pytest.approx(expected, rel=0, abs=0, nan_ok=True)
