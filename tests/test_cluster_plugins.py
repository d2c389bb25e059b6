"""The extending guide's plugin in a sweep on two nodes (conftest `two_nodes`: every trial runs on the worker node,
which cannot see the head's Ray temp dir): shipped in the job's working dir, named once by `plugins:` and once by
an installed entry point (a .dist-info folder in the working dir). Both jobs run at once on the same cluster."""
from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from cluster_nodes import JOB_TIMEOUT_S, job_runtime_env
from conftest import REPO
from plugin_example import MODULE, guide_sweep, importable, write_entry_point, write_plugin
from servers import job_submit_argv


def job_folder(root: Path, name: str, by_entry_point: bool) -> Path:
    """A job's working dir: the plugin and the guide's sweep file; for the entry point, the distribution's metadata
    instead of the sweep's `plugins:` key."""
    folder = write_plugin(root / name)
    sweep = {**guide_sweep(), "name": name}
    assert sweep["set"]["plugins"] == [MODULE]
    if by_entry_point:
        write_entry_point(folder)
        del sweep["set"]["plugins"]
    (folder / "my_sweep.yaml").write_text(yaml.safe_dump(sweep))
    return folder


@pytest.mark.slow
def test_the_guides_plugin_runs_in_a_two_node_sweep_by_config_and_by_entry_point(two_nodes, mlflow_on_s3, s3):
    from imlca.config import load_config
    from imlca.engine.protocol import run_protocol

    # under the head's Ray temp dir: the worker node sees an empty tmpfs there, so only the job can bring the plugin
    root = Path(tempfile.mkdtemp(prefix="plugins-", dir=two_nodes.head.temp_dir))
    tag = secrets.token_hex(4)
    jobs = {}
    names = (f"by_config_{tag}", f"by_entry_point_{tag}")
    for name, by_entry_point in zip(names, (False, True)):
        folder = job_folder(root, name, by_entry_point)
        env = job_runtime_env(MLFLOW_TRACKING_URI=mlflow_on_s3, IMLCA_STORAGE=f"s3://{s3.bucket}/{name}")
        argv = job_submit_argv(two_nodes.head, ["python", "-m", "imlca", "sweep", "my_sweep.yaml"], env, name, folder)
        jobs[name] = subprocess.Popen(argv, env=two_nodes.head.env, cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
    outputs = {name: job.communicate(timeout=JOB_TIMEOUT_S)[0] for name, job in jobs.items()}
    worker_view = Path(f"/proc/{two_nodes.worker.pid}/root") / root.relative_to("/")
    assert not worker_view.exists()  # the worker node never saw the plugin's folder

    # the same config in this process, with the guide's module imported from its folder
    with importable(root / names[0]):
        expected = run_protocol(load_config(REPO / "sweeps" / "tiny.yaml", [
            f"{k}={v}" for k, v in guide_sweep()["set"].items()]))
    client = MlflowClient(tracking_uri=mlflow_on_s3)
    experiment = client.get_experiment_by_name("imlca").experiment_id
    for name, job in jobs.items():
        assert job.returncode == 0, outputs[name][-6000:]
        assert "best trial: (base config)" in outputs[name]
        runs = client.search_runs([experiment], f"tags.mlflow.runName LIKE '{name}-%'")
        (parent,) = [r for r in runs if r.data.tags.get("imlca.kind") == "sweep"]
        (trial,) = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        assert (trial.data.params["merge.rule"], trial.data.params["align.method"]) == ("wavg", "im_smooth")
        with tempfile.TemporaryDirectory() as folder:
            results = json.loads(open(client.download_artifacts(trial.info.run_id, "results.json", folder)).read())
        assert results["acc"] == expected.acc  # the plugin's rule and loss, computed on the worker node
