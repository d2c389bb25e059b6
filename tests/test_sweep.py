"""A real two-trial Tune sweep on the shared local Ray cluster, tracked in a real sqlite MLflow store (the
session's `smoke_sweep`, tests/conftest.py)."""
import os

import pytest
from mlflow.tracking import MlflowClient

from imlca.tracking.store import PARENT_TAG

ARTIFACTS = {"config.yaml", "results.json", "accuracy_im_lca.csv", "accuracy_im.csv", "accuracy_im_ca.csv",
             "adapter.safetensors", "heads.safetensors"}


def test_two_trial_sweep_is_tracked(smoke_sweep, tmp_path):
    tracking = MlflowClient(tracking_uri=smoke_sweep.uri)
    experiment = tracking.get_experiment_by_name("imlca")
    runs = tracking.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("imlca.kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("imlca.kind") == "trial"]
    assert len(parents) == 1 and len(trials) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.params["space.align.lam"] == "{'grid': [0.1, 0.5]}"
    assert sorted(r.data.params["align.lam"] for r in trials) == ["0.1", "0.5"]
    for run in trials:
        assert run.data.tags[PARENT_TAG] == parent.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.params["data.benchmark"] == "synthetic" and run.data.params["lora.rank"] == "4"
        assert run.data.params["family"] == "im" and run.data.tags["family"] == "im"
        assert {k: run.data.tags[k] for k in ("benchmark", "method", "merge_rule", "seed")} == {
            "benchmark": "synthetic", "method": "im_lca", "merge_rule": "ties", "seed": "1993"}
        assert len(run.data.tags["git_commit"]) in (40, 7) or run.data.tags["git_commit"] == "unknown"
        history = tracking.get_metric_history(run.info.run_id, "A_t")
        assert [m.step for m in history] == [0, 1, 2]
        per_task = tracking.get_metric_history(run.info.run_id, "im/acc_0")
        assert [m.step for m in per_task] == [0, 1, 2]
        align = tracking.get_metric_history(run.info.run_id, "align_loss")
        assert [m.step for m in align] == [1, 2]  # nothing is aligned after task 0
        assert ARTIFACTS <= {a.path for a in tracking.list_artifacts(run.info.run_id)}
        csv = tracking.download_artifacts(run.info.run_id, "accuracy_im_lca.csv", str(tmp_path))
        rows = open(csv).read().splitlines()
        assert rows[0] == "after_task,task_0,task_1,task_2" and len(rows) == 4
        assert float(rows[3].split(",")[3]) == pytest.approx(
            tracking.get_metric_history(run.info.run_id, "acc_2")[-1].value, abs=1e-4)
    assert os.path.isdir(smoke_sweep.root / "ray_results")
