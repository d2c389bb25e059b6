"""Shared fixtures: tiny configs, and the expensive things of the session, each started or run once
(docs/development.md lists which tests use which): a local Ray cluster, a reference tiny run, a smoke sweep, an S3
server, an MLflow server on it, a two-node cluster and one smoke job on it. Reuse them rather than starting another;
leave what they hold as you found it (write to an experiment, bucket prefix or folder of your own)."""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


TINY = REPO / "sweeps" / "tiny.yaml"  # a run of seconds: 6 synthetic classes in 3 tasks, a two-block ViT at 16 px


def tiny_overrides(**extra) -> list[str]:
    """`--set` strings for changes to sweeps/tiny.yaml (load with `load_config(TINY, tiny_overrides(...))`)."""
    return [f"{k}={v}" for k, v in extra.items()]


@pytest.fixture(scope="session")
def tiny_run():
    """One uninterrupted in-process run of sweeps/tiny.yaml (3 tasks × 2 classes): the reference numbers that
    tests/test_protocol.py, tests/test_distributed.py and tests/test_chaos.py compare against. Read it, never
    change it."""
    from imlca.config import load_config
    from imlca.engine.protocol import run_protocol

    return run_protocol(load_config(TINY, tiny_overrides()))


FAMILY_METHODS = {"im": "im_lca", "slca": "slca", "ease": "ease", "mos": "mos"}  # each method family's run of sweeps/tiny.yaml (its method)


def tiny_family_overrides(family: str) -> list[str]:
    return tiny_overrides(**{"align.method": FAMILY_METHODS[family]})


@pytest.fixture(scope="session")
def tiny_slca_run():
    """The uninterrupted in-process run of sweeps/tiny.yaml with `align.method=slca`: the SLCA family's reference
    numbers (tests/test_families.py, test_protocol.py, test_distributed.py, test_chaos.py). Read it only."""
    from imlca.config import load_config
    from imlca.engine.protocol import run_protocol

    return run_protocol(load_config(TINY, tiny_family_overrides("slca")))


@pytest.fixture(scope="session")
def tiny_ease_run():
    """The uninterrupted in-process run of sweeps/tiny.yaml with `align.method=ease`: the EASE family's reference
    numbers (the family-parametrised tests). Read it only."""
    from imlca.config import load_config
    from imlca.engine.protocol import run_protocol

    return run_protocol(load_config(TINY, tiny_family_overrides("ease")))


@pytest.fixture(scope="session")
def tiny_mos_run():
    """The uninterrupted in-process run of sweeps/tiny.yaml with `align.method=mos`: the MOS family's reference
    numbers (the family-parametrised tests). Read it only."""
    from imlca.config import load_config
    from imlca.engine.protocol import run_protocol

    return run_protocol(load_config(TINY, tiny_family_overrides("mos")))


@pytest.fixture(params=list(FAMILY_METHODS))
def family_run(request):
    """(family, its reference tiny run), for tests parametrised over every method family."""
    name = "tiny_run" if request.param == "im" else f"tiny_{request.param}_run"
    return request.param, request.getfixturevalue(name)


@pytest.fixture(scope="session")
def ray_cluster():
    """One small local Ray cluster shared by every Ray test of the session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@dataclass
class SmokeSweep:
    uri: str  # sqlite:///<root>/mlflow.db, the store the sweep wrote to (experiment "imlca")
    root: Path  # also holds the sweep's Tune storage, <root>/ray_results


@pytest.fixture(scope="session")
def smoke_sweep(ray_cluster, tmp_path_factory) -> SmokeSweep:
    """sweeps/smoke.yaml (two trials, λ 0.1 and 0.5, tiny data) run once on `ray_cluster` as `make sweep` runs
    it: tracked straight into a sqlite store, Tune storage in a local folder. tests/test_sweep.py and
    tests/test_results_browser.py (which serves the store with `mlflow server`, as `make ui`) assert on it."""
    from imlca.config.sweep import load_sweep
    from imlca.orchestration.launch import launch_sweep

    root = tmp_path_factory.mktemp("smoke-sweep")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    sweep = load_sweep(REPO / "sweeps" / "smoke.yaml")
    sweep.cfg.storage_path = str(root / "ray_results")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        assert launch_sweep(sweep) == 0
    return SmokeSweep(uri, root)


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """One S3-compatible server (moto) on 127.0.0.1 for the session, with an empty bucket."""
    from cluster_nodes import s3_server

    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_on_s3(tmp_path_factory, s3):
    """An `mlflow server` whose artifacts go to the session's bucket (s3://<bucket>/mlflow); yields its URI. Several
    tests log to it: find your runs by an experiment of your own or by run name."""
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


@pytest.fixture(scope="session")
def cluster_smoke_job(two_nodes, mlflow_on_s3, s3):
    """The cluster smoke sweep (tests/data/sweeps/cluster_smoke.yaml: two trials, λ 0.1 and 0.5) submitted once
    with `ray job submit` to `two_nodes`: the repository as working dir, the package as a py_module, Tune storage
    s3://<bucket>/smoke, tracking `mlflow_on_s3`. Yields a `cluster_nodes.SubmittedJob` once the job has ended;
    tests/test_cluster_job.py and tests/test_cluster_storage.py assert on this one job."""
    import secrets

    from cluster_nodes import CLUSTER_SWEEP, JOB_TIMEOUT_S, SubmittedJob, job_runtime_env
    from servers import submit_job

    storage, job_id = f"s3://{s3.bucket}/smoke", f"s3-{secrets.token_hex(4)}"
    done = submit_job(two_nodes.head, CLUSTER_SWEEP,
                      job_runtime_env(MLFLOW_TRACKING_URI=mlflow_on_s3, IMLCA_STORAGE=storage), job_id,
                      timeout=JOB_TIMEOUT_S)
    return SubmittedJob(job_id, done, storage)
