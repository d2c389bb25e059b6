"""A second Ray node that cannot see the head's disk, and an S3-compatible server (moto), on 127.0.0.1.

As in tests/servers.py, every process runs in a session of its own and is killed by its session, never by name.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from servers import BIN, RayHead, clean_env, free_port, free_ports, http_status, kill_session, start, stop, wait_for

# The cluster tests' sweep: smoke.yaml's two trials with 1 epoch a phase; a path relative to the repository root
CLUSTER_SWEEP = ["python", "-m", "imlca", "sweep", "tests/data/sweeps/cluster_smoke.yaml"]
SHIP_PACKAGE = {"py_modules": ["platform/imlca"]}  # relative to the submitting directory, the repository root
JOB_TIMEOUT_S = 600  # a smoke sweep takes about a minute alone on 2 cores; the suite shares them


def job_runtime_env(**env_vars: str) -> dict:
    """A job's runtime env as a user submits it (cluster/README.md): the package shipped, `env_vars` set."""
    return {**SHIP_PACKAGE, "env_vars": env_vars}


@dataclass
class SubmittedJob:
    job_id: str
    done: subprocess.CompletedProcess  # the finished `ray job submit`: its stdout holds the job's log
    storage: str  # the sweep's Tune storage (IMLCA_STORAGE)


# A worker node's raylet waits 15 s for its dashboard agent's port file and aborts (not configurable in Ray 2.60);
# on a loaded 2-core machine the agent's imports alone can take that long, so a worker start is retried.
ATTEMPTS = 5


@dataclass
class S3:
    endpoint: str  # http://127.0.0.1:<port>
    bucket: str
    env: dict[str, str]  # test credentials and the endpoint, for boto3, pyarrow (Ray Tune) and MLflow
    log: Path  # the server's log: one line per request ("GET /<bucket>/<key> ...")

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.env["AWS_DEFAULT_REGION"],
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def gets(self, prefix: str) -> list[str]:
        """Keys under `prefix` fetched so far (one entry per GET of an object, in order)."""
        found = re.findall(rf'GET /{self.bucket}/({re.escape(prefix)}[^ ?]*) HTTP', self.log.read_text())
        return [urllib.parse.unquote(key) for key in found]

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@contextmanager
def s3_server(root: Path, bucket: str = "imlca-test", check_credentials: bool = False) -> Iterator[S3]:
    """moto's S3 server on a free loopback port, with one empty bucket. The credentials are moto's dummies and
    live in `env` only (handed to the processes that need them), never in this process's environment. With
    `check_credentials`, every request after the bucket's creation is authenticated against moto's (empty) IAM,
    as on a real store: the dummies are then refused."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint}
    log = root / "moto.log"
    server_env = clean_env(INITIAL_NO_AUTH_ACTION_COUNT="1") if check_credentials else clean_env()
    proc = start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], server_env, log)
    try:
        wait_for(lambda: http_status(f"{endpoint}/moto-api/") == 200, "moto server", proc, log)
        s3 = S3(endpoint, bucket, env, log)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        stop(proc)


def node_states(head: RayHead) -> dict[str, str] | None:
    """Node id -> raylet state (ALIVE, DEAD) of every node the cluster has known, from its dashboard."""
    request = urllib.request.Request(f"{head.dashboard}/nodes?view=summary", headers=head.auth)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            summary = json.loads(reply.read())["data"]["summary"]
        return {node["raylet"]["nodeId"]: node["raylet"]["state"] for node in summary}
    except (urllib.error.URLError, OSError, KeyError, TypeError, ValueError):
        return None


def alive_nodes(head: RayHead) -> int:
    """Alive nodes of the cluster (-1 while its dashboard does not answer)."""
    states = node_states(head)
    return -1 if states is None else sum(1 for state in states.values() if state == "ALIVE")


def new_node_alive(head: RayHead, known: set[str]) -> bool:
    """An alive node that is not in `known`. (Not a count: a SIGKILLed node stays ALIVE in the count until the
    GCS misses its heartbeats, so a replacement that joins meanwhile would not raise it.)"""
    states = node_states(head) or {}
    return any(state == "ALIVE" for node, state in states.items() if node not in known)


def known_nodes(head: RayHead, timeout_s: float = 60.0) -> set[str]:
    """Every node id the cluster has known so far (its dashboard may be slow to answer on a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while (states := node_states(head)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the dashboard at {head.dashboard} did not list the nodes in {timeout_s:.0f} s")
        time.sleep(1)
    return set(states)


@contextmanager
def ray_worker(head: RayHead, log: Path, num_cpus: int,
               env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """A worker node that cannot see the head's disk, as on a real cluster: `ray start --block` in a mount
    namespace of its own (root only) with an empty tmpfs over the head's Ray temp dir, which holds the head's
    session and the jobs' working dirs (where head-local storage such as ./ray_results lands); the node's own
    temp dir lies in that tmpfs. Only that folder is hidden: the checkout and its venv stay visible wherever they
    are (a tmpfs over all of /tmp hid them from a checkout under /tmp). Its token comes in the environment.
    Yields once the cluster has a new alive node; on exit kills the node's whole session."""
    known = known_nodes(head)
    hidden = str(head.temp_dir)
    agent, agent_grpc, runtime_env_agent, metrics = free_ports(4)
    ray_start = [str(BIN / "ray"), "start", "--block", f"--address={head.address}", "--node-ip-address=127.0.0.1",
                 f"--num-cpus={num_cpus}", "--num-gpus=0", f"--temp-dir={hidden}/ray-worker",
                 f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                 f"--runtime-env-agent-port={runtime_env_agent}", f"--metrics-export-port={metrics}"]
    script = f"mount -t tmpfs -o size=4g imlca-worker {shlex.quote(hidden)} && exec {shlex.join(ray_start)}"
    node_env = {k: v for k, v in head.env.items() if k != "RAY_AUTH_TOKEN_PATH"}
    node_env.update(RAY_AUTH_TOKEN=head.token, **(env or {}))
    for attempt in range(ATTEMPTS):
        proc = start(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], node_env, log)
        try:
            wait_for(lambda: new_node_alive(head, known), "ray worker node", proc, log)
            break
        except BaseException as err:  # the tmpfs goes with the namespace's last process
            kill_session(proc.pid)
            proc.wait(timeout=10)
            if attempt == ATTEMPTS - 1 or not isinstance(err, (RuntimeError, TimeoutError)):
                raise
    try:
        yield proc
    finally:
        kill_session(proc.pid)
        proc.wait(timeout=10)


def write_imagefolder(root: Path, train_per_class: int, test_per_class: int) -> Path:
    """<root>/{train,test}/class<k>/<i>.png: the synthetic benchmark's 16×16 images as PNG files."""
    from PIL import Image

    from imlca.data.synthetic import make_images

    for part, per_class, seed in (("train", train_per_class, 1), ("test", test_per_class, 2)):
        images = make_images(per_class, seed)
        for i, (image, label) in enumerate(zip(images.images, images.labels)):
            folder = root / part / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
    return root
