"""Kill a real sweep's driver (and its local Ray) mid-way, resume it: every trial once, in Tune and in MLflow."""
import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, TINY


def sweep_file(tmp_path) -> str:
    """Three trials one after another, each about 8 s on 2 cores (30 epochs a task): a kill right after the first
    trial's run is FINISHED lands in the second or third (with tiny.yaml's 4 epochs a trial took 2 s, and on a
    fast machine all three could finish between two looks at the store)."""
    path = tmp_path / "resumable.yaml"
    path.write_text(f"base: {REPO / 'sweeps' / 'tiny.yaml'}\n"
                    "set: {train.epochs: 30}\n"
                    "space:\n  align.lam: {grid: [0.1, 0.3, 0.5]}\n"
                    "max_concurrent_trials: 1\n"
                    f"storage_path: {tmp_path / 'ray_results'}\n")
    return str(path)


def trial_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("imlca")
    if experiment is None:
        return []
    return [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("imlca.kind") == "trial"]


@pytest.mark.slow
def test_killed_sweep_resumes_without_duplicates(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    client = MlflowClient(tracking_uri=uri)
    cmd = [sys.executable, "-m", "imlca", "sweep", sweep_file(tmp_path)]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and not any(r.info.status == "FINISHED" for r in trial_runs(client)):
            assert first.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(1)
        assert any(r.info.status == "FINISHED" for r in trial_runs(client)), "no trial finished in time"
        # no wait: the second trial started before the first one's export (a driver thread) marked it FINISHED
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the local Ray it started
        first.wait(timeout=60)
    before = {r.data.tags["imlca.trial_id"]: r.info.status for r in trial_runs(client)}
    assert 1 <= list(before.values()).count("FINISHED") < 3

    resumed = subprocess.run([*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600, start_new_session=True)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    runs = trial_runs(client)
    ids = [r.data.tags["imlca.trial_id"] for r in runs]
    assert len(runs) == 3 and len(set(ids)) == 3  # each trial exactly once
    assert set(before) <= set(ids)  # the runs made before the kill were reused
    assert sorted(r.data.params["align.lam"] for r in runs) == ["0.1", "0.3", "0.5"]
    for run in runs:
        assert run.info.status == "FINISHED"
        # every trial's outputs, also one whose export a killed driver never ran (the resumed sweep's end does)
        assert {"config.yaml", "results.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
        steps = {m.step for m in client.get_metric_history(run.info.run_id, "A_t")}
        assert steps == {0, 1, 2}
    parents = [r for r in client.search_runs([runs[0].info.experiment_id]) if r.data.tags.get("imlca.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    experiments = list((tmp_path / "ray_results").iterdir())
    assert len(experiments) == 1  # resumed in place, not a second experiment


def test_the_end_of_a_resumed_sweep_finishes_runs_a_killed_driver_left_running(tmp_path):
    """A trial Tune finished whose export (a driver thread) died with the driver: its run is still RUNNING, and
    Tune will not run the trial again. The resumed sweep's end finishes it; runs of unfinished trials stay."""
    from ray.tune.experiment import Trial

    from imlca.config.loading import read_config_tree
    from imlca.orchestration.mlflow_callback import MlflowSweepCallback
    from imlca.tracking.store import TRIAL_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = read_config_tree(TINY)
    callback = MlflowSweepCallback(uri, "resume-test", "s", {}, base, str(tmp_path / "experiment"))
    callback.setup()
    trials = {status: Trial("imlca_trial", config={"align.lam": 0.1}, trial_id=f"t-{status.lower()}", stub=True)
              for status in (Trial.TERMINATED, Trial.ERROR)}
    client = MlflowClient(tracking_uri=uri)
    for status, trial in trials.items():
        trial.set_status(status)
        callback.tracker.start_run(trial.trial_id, {}, {TRIAL_TAG: trial.trial_id}, callback.parent_id)
    resumed = MlflowSweepCallback(uri, "resume-test", "s", {}, base, str(tmp_path / "experiment"))  # a new driver
    resumed.setup()
    assert resumed.parent_id == callback.parent_id
    resumed.on_experiment_end(list(trials.values()))
    status = {t.trial_id: client.get_run(callback.tracker.find_trial_run(callback.parent_id, t.trial_id)).info.status
              for t in trials.values()}
    assert status == {"t-terminated": "FINISHED", "t-error": "RUNNING"}
