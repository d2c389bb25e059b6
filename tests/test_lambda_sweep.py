"""A real grouped λ sweep through Tune and MLflow: two trials need one trajectory, one trains it, the other waits for
the cache; every λ value of align_space is its own MLflow run with per-task test and validation metrics."""
import pytest
import yaml
from mlflow.tracking import MlflowClient

from imlca.config.sweep import load_sweep
from imlca.orchestration.launch import launch_sweep

from conftest import TINY

SWEEP = {
    "base": str(TINY),
    "set": {"data.task_sizes": [2, 4], "train.epochs": 1, "align.epochs": 1, "data.val_fraction": 0.25},
    "space": {"name": {"grid": ["first", "second"]}},  # two trials with one trajectory, started together
    "align_space": {"align.lam": {"grid": [0.0, 0.5]}},
    "metric": "val_avg_acc",
    "max_concurrent_trials": 2,
}


def test_grouped_sweep_trains_once_and_logs_every_lambda(ray_cluster, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    path = tmp_path / "lambda.yaml"
    path.write_text(yaml.safe_dump({**SWEEP, "storage_path": str(tmp_path / "ray_results")}))
    assert launch_sweep(load_sweep(path)) == 0
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("imlca").experiment_id])
    kinds = {kind: [r for r in runs if r.data.tags.get("imlca.kind") == kind] for kind in ("sweep", "group", "trial")}
    assert [len(kinds[k]) for k in ("sweep", "group", "trial")] == [1, 2, 4]
    parent = kinds["sweep"][0].info.run_id
    # exactly one trial fine-tuned the trajectory; the other took it from the cache
    assert sorted(r.data.metrics["trajectory_cached"] for r in kinds["group"]) == [0.0, 1.0]
    rows = {}
    for run in kinds["trial"]:
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.params["data.val_fraction"] == "0.25"
        history = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
                   for key in ("im_lca/acc_0", "im_lca/acc_1", "val_avg_acc", "avg_acc", "align_loss")}
        assert [step for step, _ in history["val_avg_acc"]] == [0, 1]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "align_spread")] == [1]
        rows.setdefault(run.data.params["align.lam"], []).append(history)
    assert sorted(rows) == ["0.0", "0.5"]
    for lam, (first, second) in rows.items():
        assert first == second, lam  # cached and uncached trials: the same numbers, bit for bit
    assert rows["0.0"][0]["align_loss"] != rows["0.5"][0]["align_loss"]  # each run aligned with its own λ


def test_align_space_takes_only_align_keys(tmp_path):
    from imlca.errors import ConfigError

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**SWEEP, "align_space": {"lora.rank": {"grid": [2, 4]}}}))
    with pytest.raises(ConfigError, match="align_space.lora.rank"):
        load_sweep(path)
