"""`ray job submit` of the smoke sweep to a real `ray start --head` cluster with token authentication.

The cluster is this module's own (its own ports, temp dir and token) and is torn down by killing the processes
it started, never by `ray stop`, which would also kill the session's `ray_cluster` (see tests/servers.py).
"""
import json
import secrets
import subprocess
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from servers import http_status, ray_head, submit_job

pytestmark = pytest.mark.slow
JOB_TIMEOUT_S = 480  # the sweep takes about a minute alone on 2 cores; other tests may share them


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    with ray_head(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


def submit(head, entrypoint: list[str], env: dict[str, str], runtime_env: dict, job_id: str,
           timeout: float = JOB_TIMEOUT_S) -> subprocess.CompletedProcess:
    return submit_job(head, entrypoint, runtime_env, job_id, timeout, env)


def written_by_job(path, root) -> bool:
    """Written by the job itself: Tune results, and MLflow artifacts (a sqlite store keeps them in ./mlruns)."""
    return path.relative_to(root).parts[0] in ("ray_results", "mlruns")


def job_info(head, job_id: str) -> dict:
    request = urllib.request.Request(f"{head.dashboard}/api/jobs/{job_id}", headers=head.auth)
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def test_the_cluster_refuses_clients_without_its_token(head):
    assert http_status(f"{head.dashboard}/api/jobs/") == 401  # no token
    assert http_status(f"{head.dashboard}/api/jobs/", {"Authorization": "Bearer " + "0" * 64}) == 403
    wrong = head.log.parent / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    refused = submit(head, ["true"], {**head.env, "RAY_AUTH_TOKEN_PATH": str(wrong)}, {}, "refused", timeout=120)
    assert refused.returncode != 0
    assert "Authentication failed: Forbidden: Invalid authentication token" in refused.stdout + refused.stderr
    assert http_status(f"{head.dashboard}/api/jobs/refused", head.auth) == 404  # nothing was submitted


def test_smoke_sweep_job_succeeds_and_is_tracked(head, tmp_path):
    db = tmp_path / "mlflow.db"
    job_id = f"imlca-smoke-{secrets.token_hex(4)}"
    # the package travels as a py_module (cluster/README.md): the job runs the submitted code, not the image's
    runtime_env = {"py_modules": ["platform/imlca"], "env_vars": {"MLFLOW_TRACKING_URI": f"sqlite:///{db}"}}
    done = submit(head, ["python", "-m", "imlca", "sweep", "sweeps/smoke.yaml"], head.env, runtime_env, job_id)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert job_info(head, job_id)["status"] == "SUCCEEDED"
    # The job's own log, tailed by `ray job submit`: the driver joined this cluster (RAY_ADDRESS, set by the job
    # supervisor) instead of starting a local one, and the sweep ran to its summary.
    assert "Connecting to existing Ray cluster" in done.stdout and "Started a local Ray instance" not in done.stdout
    assert "best trial: align.lam=" in done.stdout

    # The working dir as the job saw it: the repo without its ignored folders (.venv is ~6 GB), and the
    # sweep's Tune results under ./ray_results beside it.
    unpacked = head.temp_dir / "session_latest" / "runtime_resources" / "working_dir_files"
    workdirs = [p for p in unpacked.glob("_ray_pkg_*") if p.is_dir()]
    assert len(workdirs) == 1
    workdir = workdirs[0]
    assert (workdir / "platform" / "imlca" / "cli" / "__init__.py").is_file()
    assert (workdir / "sweeps" / "smoke.yaml").is_file()
    assert not (workdir / ".venv").exists() and not (workdir / ".pytest_cache").exists()  # both in .gitignore
    uploaded = sum(f.stat().st_size for f in workdir.rglob("*") if f.is_file() and not written_by_job(f, workdir))
    assert uploaded < 50 * 2**20  # the repo's tracked files are ~3 MB
    assert len(list((workdir / "ray_results").glob("smoke-*"))) == 1

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("imlca").experiment_id])
    parents = [r for r in runs if r.data.tags.get("imlca.kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("imlca.kind") == "trial"]
    assert len(runs) == 3 and len(parents) == 1 and len(trials) == 2
    assert parents[0].info.status == "FINISHED" and parents[0].info.run_name.startswith("smoke-")
    assert sorted(r.data.params["align.lam"] for r in trials) == ["0.1", "0.5"]  # smoke.yaml's grid
    for run in trials:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert [m.step for m in client.get_metric_history(run.info.run_id, "avg_acc")] == [0, 1, 2]
        assert {"config.yaml", "results.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
