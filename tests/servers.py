"""Real servers for end-to-end tests: an MLflow tracking server and a `ray start --head` cluster on 127.0.0.1.

Each runs in its own session (process group) with its output in a log file, is waited for with a deadline, and is
torn down with every process it started. No `ray stop`: it kills every Ray process on the machine (it matches
process names, it takes no address), including the pytest session's own `ray_cluster` and other users' clusters.
"""
from __future__ import annotations

import json
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

REPO = Path(__file__).resolve().parents[1]
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
def mlflow_server(root: Path, artifacts: str | None = None, env: dict[str, str] | None = None,
                  store: Path | None = None) -> Iterator[str]:
    """`mlflow server` on a free port over the sqlite file `store` (one it creates under `root` when None: an
    existing one is served as `mlflow ui` serves it), new artifacts under `root` or at `artifacts` (an s3:// URI:
    then `env` holds the endpoint and credentials); yields its http URI."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = root / "mlflow-server.log"
    proc = start([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                  "--backend-store-uri", f"sqlite:///{store or root / 'm.db'}",
                  "--artifacts-destination", artifacts or str(root / "artifacts"), "--workers", "1"],
                 clean_env(**(env or {})), log)
    try:
        wait_for(lambda: http_status(f"{uri}/health") == 200, "mlflow server", proc, log)
        yield uri
    finally:
        stop(proc)


@dataclass
class RayHead:
    dashboard: str  # http://127.0.0.1:<port>, where `ray job submit` talks to the cluster
    address: str  # 127.0.0.1:<GCS port>, where other nodes join
    temp_dir: Path
    env: dict[str, str]  # for the cluster's clients: token auth on, this cluster's token
    token: str
    log: Path
    agent: str  # http://127.0.0.1:<port> of the head node's dashboard agent, which runs the jobs

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def ready(self) -> bool:
        """The job API answers, and the agent it hands jobs to too."""
        return (http_status(f"{self.agent}/api/healthz", self.auth) == 200
                and http_status(f"{self.dashboard}/api/jobs/", self.auth) == 200)


def job_submit_argv(head: RayHead, entrypoint: list[str], runtime_env: dict, job_id: str,
                    working_dir: Path | None = REPO) -> list[str]:
    """`ray job submit` (with `working_dir` uploaded as the job's working dir); it waits for the job and prints
    the job's log."""
    shipped = ["--working-dir", str(working_dir)] if working_dir else []
    return [str(BIN / "ray"), "job", "submit", "--address", head.dashboard, "--submission-id", job_id, *shipped,
            "--runtime-env-json", json.dumps(runtime_env), "--", *entrypoint]


def submit_job(head: RayHead, entrypoint: list[str], runtime_env: dict, job_id: str, timeout: float,
               env: dict[str, str] | None = None, working_dir: Path | None = REPO) -> subprocess.CompletedProcess:
    """Run `ray job submit` from the repository to the job's end (exit code 1 when the job fails); stdout holds
    the job's log."""
    argv = job_submit_argv(head, entrypoint, runtime_env, job_id, working_dir)
    return subprocess.run(argv, env=env or head.env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


HEAD_ATTEMPTS = 3  # `ray start --head` can exit at start on a busy 2-core machine (its raylet's fixed 30 s to
# register with the GCS, its dashboard's start): a head that exited is started again on new ports


@contextmanager
def ray_head(root: Path, num_cpus: int = 2, env: dict[str, str] | None = None) -> Iterator[RayHead]:
    """`ray start --head --block` on 127.0.0.1 with token authentication, its own token and a short temp dir
    (unix socket paths must stay under 108 bytes). Yields once the job API answers an authenticated request.

    Only the dashboard listens on 127.0.0.1: Ray maps --node-ip-address=127.0.0.1 to the machine's address, and
    the GCS and raylet listen on every interface, so the token is what keeps other machines out."""
    token = secrets.token_hex(32)  # the form `ray get-auth-token --generate` writes
    token_file = root / "ray_auth_token"
    token_file.write_text(token)
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file), **(env or {}))
    for attempt in range(HEAD_ATTEMPTS):
        head, proc = _start_head(root, num_cpus, env, token)
        try:
            wait_for(head.ready, "ray head", proc, head.log)
            break
        except BaseException as err:
            _stop_head(head, proc)
            if attempt == HEAD_ATTEMPTS - 1 or not isinstance(err, RuntimeError):
                raise
    try:
        yield head
    finally:
        _stop_head(head, proc)


def _start_head(root: Path, num_cpus: int, env: dict[str, str], token: str) -> tuple[RayHead, subprocess.Popen]:
    temp_dir = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))
    # Every port Ray would otherwise take at a fixed default (6379, 8265, 52365, 10001) is a free one: other
    # clusters may run on this machine (another test session, the dashboard agent of this one's `ray_cluster`).
    gcs, dashboard, agent, client = free_ports(4)
    head = RayHead(f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{gcs}", temp_dir, env, token, root / "ray-head.log",
                   f"http://127.0.0.1:{agent}")
    proc = start([str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
                  "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                  f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
                  f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}", "--include-dashboard=true"], env, head.log)
    return head, proc


def _stop_head(head: RayHead, proc: subprocess.Popen) -> None:
    stop(proc, whole_group=False)  # a SIGTERM to the whole group stalls `ray start`'s drain-and-shutdown
    shutil.rmtree(head.temp_dir, ignore_errors=True)


def kill_session(sid: int, grace_s: float = 5.0, signals=(signal.SIGTERM, signal.SIGKILL)) -> None:
    """SIGTERM, then SIGKILL (or `signals`), every process of the session `sid` (its leader, started with
    start_new_session, has that pid). Ray's workers leave the leader's process group but not its session; nothing
    else is touched."""
    def members() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                zombie = entry.name.isdigit() and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
                if entry.name.isdigit() and not zombie and os.getsid(int(entry.name)) == sid:
                    found.append(int(entry.name))
            except (ProcessLookupError, PermissionError, FileNotFoundError):
                pass
        return found

    for sig in signals:
        for pid in members():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while members() and time.monotonic() < deadline:
            time.sleep(0.2)
    assert members() == [], "processes of the session survived SIGKILL"
