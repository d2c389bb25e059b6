"""`ray job submit` to a real `ray start --head` cluster with token authentication: the session's two-node cluster
(tests/conftest.py `two_nodes`) and the smoke sweep job submitted to it once (`cluster_smoke_job`).

The cluster is torn down by killing the processes it started, never by `ray stop`, which would also kill the
session's `ray_cluster` (see tests/servers.py).
"""
import json
import secrets
import urllib.request
from pathlib import Path

import pytest

from servers import http_status, submit_job

pytestmark = pytest.mark.slow


def job_info(head, job_id: str) -> dict:
    request = urllib.request.Request(f"{head.dashboard}/api/jobs/{job_id}", headers=head.auth)
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def test_the_cluster_refuses_clients_without_its_token(two_nodes, tmp_path):
    head = two_nodes.head
    assert http_status(f"{head.dashboard}/api/jobs/") == 401  # no token
    assert http_status(f"{head.dashboard}/api/jobs/", {"Authorization": "Bearer " + "0" * 64}) == 403
    wrong = tmp_path / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    refused = submit_job(head, ["true"], {}, "refused", timeout=120,
                         env={**head.env, "RAY_AUTH_TOKEN_PATH": str(wrong)})
    assert refused.returncode != 0
    assert "Authentication failed: Forbidden: Invalid authentication token" in refused.stdout + refused.stderr
    assert http_status(f"{head.dashboard}/api/jobs/refused", head.auth) == 404  # nothing was submitted


def test_smoke_sweep_job_joins_the_cluster_with_the_submitted_working_dir(two_nodes, cluster_smoke_job):
    head, done = two_nodes.head, cluster_smoke_job.done
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    info = job_info(head, cluster_smoke_job.job_id)
    assert info["status"] == "SUCCEEDED"
    # The job's own log, tailed by `ray job submit`: the driver joined this cluster (RAY_ADDRESS, set by the job
    # supervisor) instead of starting a local one, and the sweep ran to its summary.
    assert "Connecting to existing Ray cluster" in done.stdout and "Started a local Ray instance" not in done.stdout
    assert "best trial: align.lam=" in done.stdout

    # The working dir as the job saw it (unpacked on the head, where the driver runs): the repo without its
    # ignored folders (.venv is ~6 GB), and nothing of the sweep's Tune state, which went to the bucket.
    package = Path(info["runtime_env"]["working_dir"]).name.removesuffix(".zip")  # gcs://_ray_pkg_<hash>.zip
    workdir = head.temp_dir / "session_latest" / "runtime_resources" / "working_dir_files" / package
    assert (workdir / "platform" / "imlca" / "cli" / "__init__.py").is_file()
    assert (workdir / "tests" / "data" / "sweeps" / "cluster_smoke.yaml").is_file()
    assert not (workdir / ".venv").exists() and not (workdir / ".pytest_cache").exists()  # both in .gitignore
    uploaded = sum(f.stat().st_size for f in workdir.rglob("*") if f.is_file())
    assert uploaded < 50 * 2**20  # the repo's tracked files are ~3 MB
    assert not (workdir / "ray_results").exists()
