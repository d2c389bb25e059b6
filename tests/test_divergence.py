"""A diverging run stops where the NaN first appears, with one line naming task, epoch and fix; it records no result,
its MLflow run is FAILED, and in a sweep it fails while the other trial goes on and is chosen as the best."""
import json
import pickle

import pytest
import torch
from mlflow.tracking import MlflowClient

from imlca.cli import main
from imlca.config import load_config
from imlca.config.sweep import load_sweep
from imlca.engine.loops import require_finite
from imlca.errors import DivergenceError
from imlca.orchestration.launch import launch_sweep
from imlca.orchestration.tune_sweep import DIVERGED

from conftest import TINY

HUGE_LR = "train.lr=1e8"  # the tiny config's loss is NaN within the first epoch of task 0


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return MlflowClient(tracking_uri=uri)


def test_the_error_survives_pickling_and_names_where():
    err = pickle.loads(pickle.dumps(DivergenceError("the training loss is nan", "lower train.lr", epoch=3).at_task(2)))
    assert (err.task, err.epoch) == (2, 3)
    assert str(err) == "diverged at task 2, epoch 3: the training loss is nan; lower train.lr"


def test_a_non_finite_statistic_stops_before_the_bank():
    cfg = load_config(TINY).train
    require_finite([torch.ones(3)], "features", cfg, task=1)
    with pytest.raises(DivergenceError, match=r"^diverged at task 1: features are not finite; lower train.lr "
                                              r"\(now 0.04\), e.g. --set train.lr=0.004$"):
        require_finite([torch.ones(3), torch.tensor([0.0, float("inf")])], "features are not finite", cfg, task=1)


def test_run_stops_with_one_line_exit_2_and_a_failed_mlflow_run(tracking, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(TINY), "--set", HUGE_LR, "--out", str(out), "--track"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: diverged at task 0, epoch 1: the training loss is nan; lower train.lr (now 1e+08), "
                   "e.g. --set train.lr=1e+07\n")
    assert not (out / "results.json").exists() and not list(out.glob("checkpoints/task-*"))
    (run,) = tracking.search_runs([tracking.get_experiment_by_name("imlca").experiment_id])
    assert run.info.status == "FAILED" and "avg_acc" not in run.data.metrics


def test_a_diverged_trial_fails_and_the_other_finishes(ray_cluster, tracking, tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(f"base: {TINY}\nset: {{train.epochs: 1, align.epochs: 1}}\n"
                    "space:\n  train.lr: {grid: [4e-2, 1e8]}\nmax_failures: 2\n"
                    f"storage_path: {tmp_path / 'ray_results'}\n")
    assert launch_sweep(load_sweep(path)) == 1  # a trial failed
    printed = capsys.readouterr().out
    assert "trial failed: diverged at task 0, epoch 1: the training loss is nan; lower train.lr" in printed
    assert "best trial: train.lr=0.04" in printed
    runs = tracking.search_runs([tracking.get_experiment_by_name("imlca").experiment_id],
                                filter_string="tags.`imlca.kind` = 'trial'")
    status = {r.data.params["train.lr"]: r.info.status for r in runs}
    assert status == {"0.04": "FINISHED", "100000000.0": "FAILED"}
    # the trial recorded its error beside Tune's state, for a restart to re-raise instead of training
    (record,) = [p for p in (tmp_path / "ray_results").rglob("*.json") if p.parent.name == DIVERGED]
    assert json.loads(record.read_text())["epoch"] == 1
    # max_failures: 2 would allow three attempts; the diverged trial stops after Tune's one scheduled restart,
    # which re-raised the recorded error instead of training
    (errors,) = [p for p in (tmp_path / "ray_results").rglob("error.txt") if "train_lr=100000000" in str(p)]
    first, second = errors.read_text().split("Failure # 2")
    assert "Failure # 3" not in second
    assert "run_distributed" in first and "json.loads(recorded)" in second and "run_distributed" not in second
