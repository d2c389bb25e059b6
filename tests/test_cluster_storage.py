"""Sweeps on a cluster whose worker node cannot see the head's disk (tests/conftest.py `two_nodes`: the head
has no CPUs, so every trial runs on the worker; the worker has an empty tmpfs over the head's Ray temp dir), with
storage on an S3-compatible server (moto) on loopback. Jobs are submitted as a user submits them: `ray job submit`
with the sweep files as working dir and the package shipped as a py_module (cluster/README.md)."""
from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mlflow.tracking import MlflowClient

from cluster_nodes import CLUSTER_SWEEP, JOB_TIMEOUT_S, job_runtime_env, write_imagefolder
from conftest import REPO
from servers import BIN, clean_env, job_submit_argv, submit_job


def task_lines(output: str) -> list[tuple[str, int]]:
    """(trial id, task) of every progress line the sweep printed."""
    return [(m[1], int(m[2])) for m in re.finditer(r"^\[(\w+)\] .*: task (\d+) A_t=", output, re.M)]


def test_the_worker_sees_the_checkout_but_not_the_heads_session(two_nodes):
    """Seen through the worker node's mount namespace (/proc/<pid>/root): the head's session folder is an empty
    tmpfs but for the node's own temp dir, while the venv's `ray` and this checkout are there, wherever the checkout
    lives (a tmpfs over all of /tmp hid them from a checkout under /tmp: `.venv/bin/ray: not found`)."""
    worker_root = Path(f"/proc/{two_nodes.worker.pid}/root")
    head_dir = two_nodes.head.temp_dir
    assert (head_dir / "session_latest").exists()
    assert [p.name for p in (worker_root / head_dir.relative_to("/")).iterdir()] == ["ray-worker"]
    assert (worker_root / BIN.relative_to("/") / "ray").is_file()
    assert (worker_root / REPO.relative_to("/") / "platform" / "imlca" / "__init__.py").is_file()


def test_head_local_storage_is_refused_before_any_trial(two_nodes, mlflow_on_s3):
    # The default storage, ./ray_results, lies in the job's working dir on the head: no worker can reach it.
    job_id = f"local-{secrets.token_hex(4)}"
    done = submit_job(two_nodes.head, CLUSTER_SWEEP,
                      job_runtime_env(MLFLOW_TRACKING_URI=mlflow_on_s3), job_id, timeout=JOB_TIMEOUT_S)
    assert done.returncode != 0
    # `ray job submit` prints the job's log, then again the end of it with the job's status
    (error,) = {line for line in done.stdout.splitlines() if line.startswith("error: ")}
    assert error.startswith("error: config key 'storage_path': ") and "ray_results is on this node's disk" in error
    assert "the Ray cluster has 2 nodes" in error and "s3://" in error
    assert "Traceback" not in done.stdout and task_lines(done.stdout) == []  # refused up front, no trial ran


def test_smoke_sweep_with_s3_storage_runs_on_the_worker_and_is_tracked(two_nodes, cluster_smoke_job, mlflow_on_s3,
                                                                      s3):
    done = cluster_smoke_job.done
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "best trial: align.lam=" in done.stdout
    assert sorted(task for _, task in task_lines(done.stdout)) == [0, 0, 1, 1, 2, 2]

    # The package the job ran is the one it shipped (py_modules), unpacked by the head for the driver.
    shipped = list((two_nodes.head.temp_dir / "session_latest" / "runtime_resources" / "py_modules_files")
                   .glob("_ray_pkg_*/imlca/orchestration/storage.py"))
    assert shipped, "the job did not run the shipped package"

    # Tune's state and each trial's last task checkpoint are in the bucket, none on the head's disk.
    keys = s3.keys("smoke/")
    (experiment,) = {k.split("/")[1] for k in keys if k.split("/")[1].startswith("cluster_smoke-")}
    checkpoints = {k.split("/")[2] for k in keys if "/checkpoint_" in k}
    assert len(checkpoints) == 2  # one trial folder each, num_to_keep=1
    assert any(k.endswith("/imlca_mlflow.json") for k in keys)

    client = MlflowClient(tracking_uri=mlflow_on_s3)
    runs = client.search_runs([client.get_experiment_by_name("imlca").experiment_id],
                              filter_string=f"tags.mlflow.runName LIKE '{experiment}%'")
    (parent,) = [r for r in runs if r.data.tags.get("imlca.kind") == "sweep"]
    trials = client.search_runs([parent.info.experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert parent.info.status == "FINISHED" and len(trials) == 2
    assert sorted(r.data.params["align.lam"] for r in trials) == ["0.1", "0.5"]
    stored = s3.keys("mlflow/")
    for run in trials:
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "avg_acc")] == [0, 1, 2]
        assert {"config.yaml", "results.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
        # the MLflow server put them in the bucket (--artifacts-destination s3://...)
        ours = [k for k in stored if f"/{run.info.run_id}/artifacts/" in k]
        assert {k.rsplit("/", 1)[1] for k in ours} >= {"config.yaml", "results.json"}


def test_a_sweep_reads_its_data_from_s3_on_a_worker_that_has_none(two_nodes, mlflow_on_s3, s3, tmp_path):
    # The data root is an s3:// prefix (IMLCA_DATA, as the cluster configs set it) holding the PNGs and their decoded
    # copy (`imlca data push --decoded`); the worker node has no data and cannot see the head's disk. Its two trials
    # start together: one downloads the PNGs and decodes them, the other fetches the decoded copy
    # (data.remote_decoded), each once, into the node's cache; both train on the same pixels.
    local = write_imagefolder(tmp_path / "tiny", 40, 20)
    prefix, run = f"data-{secrets.token_hex(4)}", f"s3data-{secrets.token_hex(4)}"
    push = subprocess.run([sys.executable, "-m", "imlca", "data", "push", "imagefolder", "--root", str(local),
                           "--to", f"s3://{s3.bucket}/{prefix}", "--decoded", "--config", "tiny.yaml"],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env=clean_env(PYTHONPATH=str(REPO / "platform"), IMLCA_CACHE=str(tmp_path / "c"), **s3.env))
    assert push.returncode == 0, push.stderr
    cache = f"{two_nodes.head.temp_dir}/imlca-cache-{run}"  # the worker's own tmpfs there; the head's disk here
    before = len(s3.gets(f"{prefix}/"))
    done = submit_job(two_nodes.head, ["python", "-m", "imlca", "sweep", "tests/data/sweeps/cluster_s3_data.yaml"],
                      job_runtime_env(MLFLOW_TRACKING_URI=mlflow_on_s3, IMLCA_STORAGE=f"s3://{s3.bucket}/{run}",
                                      IMLCA_DATA=f"s3://{s3.bucket}/{prefix}", IMLCA_CACHE=cache), run,
                      timeout=JOB_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert sorted(task for _, task in task_lines(done.stdout)) == [0, 0, 1, 1, 2, 2]

    gets = [g for g in s3.gets(f"{prefix}/")[before:] if not g.endswith("/imlca-manifest.json")]
    decoded = f"{prefix}/imlca-decoded/16-bilinear"
    files = sorted(f"{prefix}/{p.relative_to(local).as_posix()}" for p in local.rglob("*.png"))
    files += [f"{decoded}/{part}/{name}" for part in ("train", "test")
              for name in ("index.npy", "labels.npy", "meta.json", "pixels.u8")]
    assert sorted(gets) == sorted(files)  # each file once: the PNGs for one trial, the decoded copy for the other
    copied = re.findall(r"imagefolder: copied (\d+) bytes from s3://\S+ to (\S+/imlca-cache-\S+) in", done.stdout)
    assert len(copied) == 1 and int(copied[0][0]) == sum(p.stat().st_size for p in local.rglob("*.png"))
    fetched = re.findall(r"imagefolder: copied the decoded images \((\d+) bytes\) from s3://\S+/16-bilinear to "
                         r"(\S+/imlca-cache-\S+) \(once per node\)", done.stdout)
    assert len(fetched) == 1 and int(fetched[0][0]) > 0
    assert not Path(cache).exists()  # the driver (on the head) checked the manifests and copied nothing

    client = MlflowClient(tracking_uri=mlflow_on_s3)
    runs = client.search_runs([client.get_experiment_by_name("imlca").experiment_id],
                              filter_string="tags.mlflow.runName LIKE 'cluster_s3_data-%'")
    (parent,) = [r for r in runs if r.data.tags.get("imlca.kind") == "sweep"]
    trials = client.search_runs([parent.info.experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    assert {r.data.params["data.benchmark"] for r in trials} == {"imagefolder"}
    accuracies = {r.data.params["data.remote_decoded"]: [m.value for m in sorted(client.get_metric_history(
        r.info.run_id, "avg_acc"), key=lambda m: m.step)] for r in trials}
    assert accuracies["True"] == accuracies["False"] and len(accuracies["True"]) == 3  # the same pixels


def wait_for_checkpoint(s3, prefix: str, index: int, job: subprocess.Popen, timeout_s: float = JOB_TIMEOUT_S) -> int:
    """The highest task checkpoint index under `prefix` once it reaches `index` (its first file suffices)."""
    client, deadline = s3.client(), time.monotonic() + timeout_s
    while time.monotonic() < deadline and job.poll() is None:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix)
        found = [int(item["Key"].split("/checkpoint_")[1].split("/")[0])
                 for page in pages for item in page.get("Contents", []) if "/checkpoint_" in item["Key"]]
        if found and max(found) >= index:
            return max(found)
        time.sleep(0.1)
    job.kill()
    raise AssertionError(f"no checkpoint_{index:06d} under s3://{s3.bucket}/{prefix}; job output:\n"
                         f"{job.communicate()[0][-4000:]}")


@pytest.mark.rehearsal  # deselected by default: 436-467 s here at load 10-28 (the two trial starts dominate)
def test_a_trial_resumes_from_s3_on_another_node_after_its_node_is_lost(two_nodes, mlflow_on_s3, s3):
    from imlca.config import ExperimentConfig, from_dict
    from imlca.config.sweep import load_sweep
    from imlca.engine.protocol import run_protocol

    sweep, run = "tests/data/sweeps/cluster_one_trial.yaml", f"loss-{secrets.token_hex(4)}"
    argv = job_submit_argv(two_nodes.head, ["python", "-m", "imlca", "sweep", sweep],
                           job_runtime_env(MLFLOW_TRACKING_URI=mlflow_on_s3, IMLCA_STORAGE=f"s3://{s3.bucket}/{run}"),
                           run)
    job = subprocess.Popen(argv, env=two_nodes.head.env, cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        # A trial uploads a task's checkpoint, then Tune's driver registers it (a `save` round trip to the trial)
        # and only then lets the trial go on: the upload of task 1's checkpoint proves task 0's is registered.
        # (A kill as soon as task 0's was in the bucket often beat the registration: the trial then restarted
        # from scratch, as it should, and never printed the resume line.)
        uploading = wait_for_checkpoint(s3, f"{run}/", 1, job)
        assert uploading < 2, "the trial reached its last task before its node could be lost"
        two_nodes.lose_worker()  # SIGKILL to the node's session: its raylet, the trial, TaskWorker, CentralActor
        two_nodes.add_worker()  # a new node, with an empty temp dir: only the bucket holds the trial's state
        output, _ = job.communicate(timeout=JOB_TIMEOUT_S)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 0, output[-6000:]
    resumed = re.findall(rf"trial resumes after task (\d+) from its checkpoint {s3.bucket}/{run}/", output)
    assert len(resumed) == 1 and int(resumed[0]) in (0, 1), output[-6000:]  # task 1's if it was registered
    tasks = [task for _, task in task_lines(output)]
    # Task 0 ran once (no restart from scratch); task 1 ran again only if its checkpoint was not registered.
    assert tasks.count(0) == 1 and sorted(set(tasks)) == [0, 1, 2] and tasks.count(2) == 1, output[-6000:]

    client = MlflowClient(tracking_uri=mlflow_on_s3)
    experiment = client.get_experiment_by_name("imlca").experiment_id
    (parent,) = client.search_runs([experiment], "tags.mlflow.runName LIKE 'cluster_one_trial-%'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
    (trial,) = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted({m.step for m in client.get_metric_history(trial.info.run_id, "avg_acc")}) == [0, 1, 2]
    with tempfile.TemporaryDirectory() as folder:
        results = json.loads(open(client.download_artifacts(trial.info.run_id, "results.json", folder)).read())
    uninterrupted = run_protocol(from_dict(ExperimentConfig, load_sweep(REPO / sweep).base_tree))
    assert results["acc"] == uninterrupted.acc
