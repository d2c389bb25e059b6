"""The services imlca starts listen on 127.0.0.1 only (docs/security.md): a local `imlca sweep`'s Ray (GCS, raylet,
agents, workers, the driver) and the cluster head's MLflow server as cluster/start_mlflow.sh starts it. The
addresses are read from the processes' own sockets (psutil), sampled while they run."""
from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time

import psutil
import pytest

from conftest import REPO
from servers import clean_env, free_port, kill_session

SWEEP = REPO / "tests" / "data" / "sweeps" / "cluster_one_trial.yaml"  # one trial, one epoch a phase
START_MLFLOW = REPO / "cluster" / "start_mlflow.sh"


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # '::ffff:127.0.0.1' on a dual-stack socket
    return (mapped or address).is_loopback


def listening(processes: list[psutil.Process]) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of `processes` that still run."""
    found = set()
    for process in processes:
        try:
            name = process.name()
            for conn in process.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((name, conn.laddr.ip, conn.laddr.port))
        except psutil.Error:  # ended meanwhile
            pass
    return found


@pytest.mark.slow
def test_a_local_sweeps_ray_listens_on_loopback_only(tmp_path):
    env = clean_env(PYTHONPATH=str(REPO / "platform"), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
                    IMLCA_STORAGE=str(tmp_path / "ray_results"))
    sweep = subprocess.Popen([sys.executable, "-m", "imlca", "sweep", str(SWEEP)], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: set[tuple[str, str, int]] = set()
    deadline = time.monotonic() + 600
    try:
        while sweep.poll() is None and time.monotonic() < deadline:
            try:
                leader = psutil.Process(sweep.pid)
                seen |= listening([leader, *leader.children(recursive=True)])
            except psutil.NoSuchProcess:
                break
            time.sleep(1.0)
        output = sweep.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert sweep.returncode == 0, output[-3000:]
    names = {name for name, _, _ in seen}
    assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::") for n in names), seen  # sampled them
    assert [s for s in seen if not is_loopback(s[1])] == []


@pytest.mark.slow
def test_the_cluster_heads_mlflow_server_listens_on_loopback_only(tmp_path):
    port = free_port()
    env = clean_env(IMLCA_MLFLOW_STORE=str(tmp_path), IMLCA_MLFLOW_PORT=str(port))  # sqlite on the head's disk
    try:
        done = subprocess.run(["bash", str(START_MLFLOW), str(tmp_path / "artifacts"), "--workers", "1"], env=env,
                              capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr + (tmp_path / "mlflow.log").read_text()[-3000:]
        sid = int((tmp_path / "mlflow.pid").read_text())
        seen = listening([p for p in psutil.process_iter() if _session(p) == sid])
        assert port in {p for _, _, p in seen} and [s for s in seen if not is_loopback(s[1])] == [], seen
        assert done.stdout.endswith(f"mlflow server up on 127.0.0.1:{port} (log {tmp_path / 'mlflow.log'})\n")
    finally:
        if (tmp_path / "mlflow.pid").is_file():
            kill_session(int((tmp_path / "mlflow.pid").read_text()))


def _session(process: psutil.Process) -> int | None:
    try:
        return os.getsid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None
