"""Cluster scripts run for real on this machine: cluster/start_mlflow.sh leaves a running server alone, and Ray's
fake_multinode autoscaler with cluster/fake-multinode.yaml adds a GPU worker per waiting task (slow)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

from cluster_files import CLUSTER, launcher
from servers import clean_env, free_port, kill_session, log_tail, start  # the end-to-end tests' process helpers


def test_start_mlflow_keeps_a_running_server(tmp_path):
    # A process whose command line reads "mlflow server" stands in for one started earlier (a real server
    # takes ~20 s to boot here): re-running `ray up` must leave it alone.
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "mlflow", "server"])
    script = ["bash", str(CLUSTER / "start_mlflow.sh")]
    env = {**os.environ, "IMLCA_MLFLOW_STORE": str(tmp_path)}
    try:
        (tmp_path / "mlflow.pid").write_text(str(stand_in.pid))
        again = subprocess.run(script + [str(tmp_path)], env=env, capture_output=True, text=True, timeout=30)
        assert (again.returncode, again.stdout) == (0, f"mlflow server already running (pid {stand_in.pid})\n")
        bare = subprocess.run(script, env=env, capture_output=True, text=True, timeout=30)
        assert bare.returncode != 0 and "usage: start_mlflow.sh ARTIFACTS_DESTINATION" in bare.stderr
    finally:
        stand_in.kill()
        stand_in.wait()


# Runs in its own process so that this pytest process never connects to the test cluster.
DRIVER = """
import json, sys, time, ray
for _ in range(60):
    try:
        ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
        break
    except Exception:
        time.sleep(1)
head = ray.get_runtime_context().get_node_id()

@ray.remote(num_cpus=0)
class Barrier:
    def __init__(self):
        self.arrived = 0

    def arrive(self):
        self.arrived += 1

    def count(self):
        return self.arrived

@ray.remote(num_gpus=1, num_cpus=0)
def where(barrier):
    ray.get(barrier.arrive.remote())
    while ray.get(barrier.count.remote()) < 2:  # hold the GPU until the other task holds one too
        time.sleep(0.2)
    return ray.get_runtime_context().get_node_id()

barrier = Barrier.remote()
nodes = ray.get([where.remote(barrier), where.remote(barrier)], timeout=90)
gpus = sum(n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"])
print("RESULT " + json.dumps({"head": head, "task_nodes": nodes, "gpus": gpus}))
"""


@pytest.mark.slow
def test_fake_cluster_adds_a_gpu_worker_per_waiting_task(tmp_path):
    port, dashboard, agent, client = (free_port() for _ in range(4))
    temp_dir = Path(tempfile.mkdtemp(prefix="imlca-ray-", dir="/tmp"))  # short: Ray's socket paths are capped
    (tmp_path / "auth_token").write_text(uuid.uuid4().hex)
    config = launcher("fake-multinode.yaml")
    config["provider"]["gcs_address"] = f"127.0.0.1:{port}"
    (tmp_path / "autoscaling.yaml").write_text(yaml.safe_dump(config))
    env = clean_env(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_AUTH_MODE="token",
                    RAY_AUTH_TOKEN_PATH=str(tmp_path / "auth_token"))
    head = start(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}", f"--temp-dir={temp_dir}",
         "--num-cpus=1", "--num-gpus=0", f"--autoscaling-config={tmp_path / 'autoscaling.yaml'}"],
        env, tmp_path / "head.log")
    try:
        run = subprocess.run([sys.executable, "-c", DRIVER, f"127.0.0.1:{port}"], env=env,
                             capture_output=True, text=True, timeout=150)
        assert run.returncode == 0, run.stderr[-2000:] + log_tail(tmp_path / "head.log")
        (line,) = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        result = json.loads(line.removeprefix("RESULT "))
        # Two tasks of one GPU each, a head with none: the autoscaler added two GPU workers from zero.
        assert len(set(result["task_nodes"])) == 2 and result["head"] not in result["task_nodes"]
        assert result["gpus"] == 2
    finally:
        try:
            kill_session(head.pid)
        finally:
            head.poll()  # reap the `ray start` child
            shutil.rmtree(temp_dir, ignore_errors=True)
