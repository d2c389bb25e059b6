"""A sweep on an autoscaling cluster (Ray's fake_multinode provider, cluster/fake-multinode.yaml): the head has no
GPU, every trial's TaskWorker needs one, so the autoscaler adds GPU workers; checkpoints go to S3 (a folder on
the head would be refused, IMLCA_AUTOSCALING=1); once the sweep is done the idle timeout removes the workers."""
from __future__ import annotations

import re
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from cluster_nodes import alive_nodes
from servers import RayHead, clean_env, free_ports, kill_session, log_tail, start, submit_job, wait_for

JOB_TIMEOUT_S = 600
SWEEP = ["python", "-m", "imlca", "sweep", str(REPO / "tests" / "data" / "sweeps" / "cluster_gpu.yaml")]
# The fake nodes are raylets on this machine sharing the head's session folder: a shipped working_dir or
# py_modules is unpacked there once and deleted by whichever node's agent is done with it first, under the other
# nodes and the driver. So the package comes from this checkout (as on a real cluster from each node's image).
PACKAGE = {"PYTHONPATH": str(REPO / "platform")}
IDLE_TIMEOUT_MINUTES = 0.25  # 15 s: the rehearsal's 1 minute would only make the test wait


@pytest.mark.rehearsal  # deselected by default: minutes on 2 cores; see cluster/README.md
def test_gpu_trials_bring_up_gpu_workers_that_go_away_when_idle(tmp_path, s3):
    gcs, dashboard, agent, client = free_ports(4)
    temp_dir = Path(tempfile.mkdtemp(prefix="imlca-fake-", dir="/tmp"))  # short: Ray's socket paths are capped
    config = yaml.safe_load((REPO / "cluster" / "fake-multinode.yaml").read_text())
    config["provider"]["gcs_address"] = f"127.0.0.1:{gcs}"
    config["idle_timeout_minutes"] = IDLE_TIMEOUT_MINUTES
    (tmp_path / "autoscaling.yaml").write_text(yaml.safe_dump(config))
    token = secrets.token_hex(32)
    (tmp_path / "auth_token").write_text(token)
    env = clean_env(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_AUTH_MODE="token",
                    RAY_AUTH_TOKEN_PATH=str(tmp_path / "auth_token"), IMLCA_AUTOSCALING="1", **s3.env)
    head = RayHead(f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{gcs}", temp_dir, env, token, tmp_path / "head.log",
                   f"http://127.0.0.1:{agent}")
    proc = start([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                  "--node-ip-address=127.0.0.1", f"--port={gcs}", "--dashboard-host=127.0.0.1",
                  f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent}",
                  f"--ray-client-server-port={client}", f"--temp-dir={temp_dir}", "--num-cpus=1", "--num-gpus=0",
                  f"--autoscaling-config={tmp_path / 'autoscaling.yaml'}"], env, head.log)
    try:
        wait_for(head.ready, "fake cluster head", proc, head.log)
        assert alive_nodes(head) == 1
        local = submit_job(head, SWEEP, {"env_vars": PACKAGE}, f"local-{secrets.token_hex(4)}", JOB_TIMEOUT_S,
                           working_dir=None)
        assert local.returncode != 0 and "nodes added on demand (IMLCA_AUTOSCALING=1)" in local.stdout
        assert alive_nodes(head) == 1  # refused before any trial asked for a GPU

        env_vars = {**PACKAGE, "IMLCA_STORAGE": f"s3://{s3.bucket}/autoscaling",
                    "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"}
        done = submit_job(head, SWEEP, {"env_vars": env_vars}, f"gpu-{secrets.token_hex(4)}", JOB_TIMEOUT_S,
                          working_dir=None)
        assert done.returncode == 0, done.stdout[-6000:] + log_tail(head.log)
        assert "best trial: align.lam=" in done.stdout
        assert len({k.split("/")[2] for k in s3.keys("autoscaling/") if "/checkpoint_" in k}) == 2
        # The autoscaler added GPU workers for the trials (the head has none) and removes them once idle.
        logs = temp_dir / "session_latest" / "logs"
        monitor = "".join(p.read_text(errors="replace") for p in logs.glob("monitor.*"))
        assert re.search(r"Adding \d node\(s\) of type gpu", monitor)
        deadline = time.monotonic() + 180
        while alive_nodes(head) > 1 and time.monotonic() < deadline:
            time.sleep(2)
        assert alive_nodes(head) == 1, log_tail(logs / "monitor.log")
    finally:
        kill_session(proc.pid)
        proc.wait(timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)
