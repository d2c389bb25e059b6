"""Shared fixtures: tiny configs, and one small local Ray cluster for the whole session."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


TINY = REPO / "sweeps" / "tiny.yaml"  # a run of seconds: 6 synthetic classes in 3 tasks, a two-block ViT at 16 px


def tiny_overrides(**extra) -> list[str]:
    """`--set` strings for changes to sweeps/tiny.yaml (load with `load_config(TINY, tiny_overrides(...))`)."""
    return [f"{k}={v}" for k, v in extra.items()]


@pytest.fixture(scope="session")
def ray_cluster():
    """One small local Ray cluster shared by every Ray test of the session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """One S3-compatible server (moto) on 127.0.0.1 for the session, with an empty bucket."""
    from cluster_nodes import s3_server

    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_on_s3(tmp_path_factory, s3):
    """An `mlflow server` whose artifacts go to the session's bucket (s3://<bucket>/mlflow); yields its URI."""
    from servers import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow-s3"), f"s3://{s3.bucket}/mlflow", s3.env) as uri:
        yield uri


@pytest.fixture(scope="session")
def two_nodes(tmp_path_factory, s3):
    """A `ray start --head --num-cpus=0` cluster (every trial runs elsewhere) and a worker node with 2 CPUs that
    cannot see the head's Ray temp dir (its session, the jobs' working dirs). The nodes get the S3 test credentials
    in their environment, as cloud nodes get an instance profile. `lose_worker()` SIGKILLs the worker node's
    every process; `add_worker()` starts one."""
    from contextlib import ExitStack

    from cluster_nodes import ray_worker
    from servers import kill_session, ray_head

    root = tmp_path_factory.mktemp("two-nodes")
    with ray_head(root, num_cpus=0, env=s3.env) as head, ExitStack() as worker_stack:
        class TwoNodes:
            workers = 0

            def __init__(self):
                self.head = head
                self.add_worker()

            def add_worker(self) -> None:
                self.workers += 1
                log = root / f"worker{self.workers}.log"
                self.worker = worker_stack.enter_context(ray_worker(head, log, num_cpus=2, env=s3.env))

            def lose_worker(self) -> None:
                kill_session(self.worker.pid, signals=(signal.SIGKILL,))
                worker_stack.close()

        yield TwoNodes()
