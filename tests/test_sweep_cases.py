"""A sweep whose `case` grid names experiment files: each trial runs its file's experiment on the shared local Ray
cluster (two method families in one Tune run), tracked in a real sqlite MLflow store."""
import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY


@pytest.fixture(scope="module")
def case_sweep(ray_cluster, tmp_path_factory):
    from imlca.config.sweep import load_sweep
    from imlca.orchestration.launch import launch_sweep

    root = tmp_path_factory.mktemp("case-sweep")
    (root / "slca.yaml").write_text(f"extends: {TINY}\nalign: {{method: slca}}\n")
    (root / "cases.yaml").write_text(f"base: {TINY}\nspace:\n  case: {{grid: [{TINY}, slca.yaml]}}\n"
                                     f"max_concurrent_trials: 2\nstorage_path: {root / 'ray_results'}\n")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        assert launch_sweep(load_sweep(root / "cases.yaml")) == 0
    return uri


def test_each_case_runs_its_own_files_experiment(case_sweep, tiny_run, tiny_slca_run):
    tracking = MlflowClient(tracking_uri=case_sweep)
    runs = tracking.search_runs([tracking.get_experiment_by_name("imlca").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("imlca.kind") == "sweep")
    assert parent.data.params["space.case"] == f"['{TINY}', 'slca.yaml']"  # the files, not every key they set
    trials = {r.data.params["align.method"]: r for r in runs if r.data.tags.get("imlca.kind") == "trial"}
    assert set(trials) == {"im_lca", "slca"} and trials["slca"].data.params["family"] == "slca"
    assert trials["slca"].info.run_name.startswith("case=slca.yaml")
    for method, reference in (("im_lca", tiny_run), ("slca", tiny_slca_run)):  # the in-process run of that file
        logged = trials[method].data.metrics[f"{method}/avg_acc"]
        assert logged == pytest.approx(reference.summary[method]["avg_acc"], abs=1e-6), method
