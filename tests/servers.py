"""Real servers for end-to-end tests: an MLflow tracking server and a `ray start --head` cluster on 127.0.0.1.

Each runs in its own session (process group) with its output in a log file, is waited for with a deadline, and is
torn down with every process it started. No `ray stop`: it kills every Ray process on the machine (it matches
process names, it takes no address), including the pytest session's own `ray_cluster` and other users' clusters.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import psutil

BIN = Path(sys.executable).parent  # the venv's mlflow and ray executables sit beside its python
STARTUP_S = 180.0  # generous: the machine has 2 cores, often busy with other tests


def free_ports(n: int) -> list[int]:
    """`n` distinct ports nothing listens on now (the OS picks them; all held until all are picked)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def http_status(url: str, headers: dict[str, str] | None = None, timeout: float = 3.0) -> int | None:
    """The HTTP status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as reply:
            return reply.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


def log_tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def wait_for(ready: Callable[[], bool], what: str, proc: subprocess.Popen, log: Path,
             timeout_s: float = STARTUP_S) -> None:
    """Poll `ready` until it holds; fail with the server's log when it exits or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}:\n{log_tail(log)}")
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s:\n{log_tail(log)}")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would point a child at another cluster or token."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` in a job's entrypoint is the venv's
    env.update(extra)
    return env


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def stop(proc: subprocess.Popen, grace_s: float = 30.0, whole_group: bool = True) -> None:
    """SIGTERM the server (its whole process group, or only its leader, which then stops its own children), then
    SIGKILL whatever it started that is still alive after `grace_s`.

    The descendants are listed before the signal: Ray's workers live in process groups of their own."""
    try:
        tree = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = [proc.pid]
    try:
        (os.killpg if whole_group else os.kill)(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    survivors = []
    for pid in tree:
        try:
            survivor = psutil.Process(pid)
            survivor.kill()
            survivors.append(survivor)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(survivors, timeout=10)
    proc.wait(timeout=10)


@contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """`mlflow server` on a free port, sqlite store and artifacts under `root`; yields its http URI."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = root / "mlflow-server.log"
    proc = start([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                  "--backend-store-uri", f"sqlite:///{root / 'm.db'}",
                  "--artifacts-destination", str(root / "artifacts"), "--workers", "1"], clean_env(), log)
    try:
        wait_for(lambda: http_status(f"{uri}/health") == 200, "mlflow server", proc, log)
        yield uri
    finally:
        stop(proc)


@dataclass
class RayHead:
    dashboard: str  # http://127.0.0.1:<port>, where `ray job submit` talks to the cluster
    temp_dir: Path
    env: dict[str, str]  # for the cluster's clients: token auth on, this cluster's token
    token: str
    log: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextmanager
def ray_head(root: Path, num_cpus: int = 2) -> Iterator[RayHead]:
    """`ray start --head --block` on 127.0.0.1 with token authentication, its own token and a short temp dir
    (unix socket paths must stay under 108 bytes). Yields once the job API answers an authenticated request.

    Only the dashboard listens on 127.0.0.1: Ray maps --node-ip-address=127.0.0.1 to the machine's address, and
    the GCS and raylet listen on every interface, so the token is what keeps other machines out."""
    temp_dir = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))
    token = secrets.token_hex(32)  # the form `ray get-auth-token --generate` writes
    token_file = root / "ray_auth_token"
    token_file.write_text(token)
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
    # Every port Ray would otherwise take at a fixed default (6379, 8265, 52365, 10001) is a free one: other
    # clusters may run on this machine (another test session, the dashboard agent of this one's `ray_cluster`).
    gcs, dashboard, agent, client = free_ports(4)
    head = RayHead(f"http://127.0.0.1:{dashboard}", temp_dir, env, token, root / "ray-head.log")
    proc = start([str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
                  "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                  f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
                  f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}", "--include-dashboard=true"], env, head.log)

    def ready() -> bool:  # jobs are handed to the head node's agent: wait for it too
        return (http_status(f"http://127.0.0.1:{agent}/api/healthz", head.auth) == 200
                and http_status(f"{head.dashboard}/api/jobs/", head.auth) == 200)

    try:
        wait_for(ready, "ray head", proc, head.log)
        yield head
    finally:
        stop(proc, whole_group=False)  # a SIGTERM to the whole group stalls `ray start`'s drain-and-shutdown
        shutil.rmtree(temp_dir, ignore_errors=True)
