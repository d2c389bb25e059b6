"""`python -m imlca run --track` against a real `mlflow server` over HTTP (the session's `mlflow_on_s3`, whose
artifacts go to the S3-compatible bucket), and against a closed port."""
import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO
from servers import clean_env, free_port

ARTIFACTS = {"config.yaml", "results.json", "adapter.safetensors", "heads.safetensors"}
EXPERIMENT = "over-http"  # its own experiment on the shared server


def run_tracked(uri: str, out, timeout: float = 300) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "imlca", "run", "sweeps/tiny.yaml", "--track", "--out", str(out),
            "--set", f"tracking.experiment={EXPERIMENT}"]
    return subprocess.run(argv, env=clean_env(MLFLOW_TRACKING_URI=uri), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def running_mean(values: list[float]) -> list[float]:
    return [sum(values[: t + 1]) / (t + 1) for t in range(len(values))]


@pytest.mark.slow  # about 20 s for the run on 2 idle cores (the server is the session's)
def test_run_is_tracked_over_http(mlflow_on_s3, s3, tmp_path):
    uri = mlflow_on_s3
    done = run_tracked(uri, tmp_path / "run")
    assert done.returncode == 0, done.stderr[-4000:]
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    assert run.data.tags["imlca.kind"] == "run" and run.data.tags["benchmark"] == "synthetic"
    params = run.data.params
    assert (params["data.benchmark"], params["lora.rank"], params["train.epochs"]) == ("synthetic", "4", "4")

    # avg_acc after task t is the mean of A_0..A_t, A_t the mean accuracy on tasks 0..t (acc[t][0..t]).
    # E.g. acc = [[80], [90, 55], [95, 65, 87.5]]: A = [80, 72.5, 82.5], avg_acc = [80, 76.25, 78.33].
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    acc = results["acc"]["im_lca"]
    history = client.get_metric_history(run.info.run_id, "avg_acc")
    assert [m.step for m in history] == [0, 1, 2]
    assert [m.value for m in history] == pytest.approx(running_mean([sum(row) / len(row) for row in acc]),
                                                       abs=1e-6)

    assert ARTIFACTS <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server, not a local path
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    for name in sorted(ARTIFACTS):
        local = client.download_artifacts(run.info.run_id, name, str(fetched))
        assert open(local, "rb").read() == (tmp_path / "run" / name).read_bytes(), name
    stored = [k for k in s3.keys("mlflow/") if f"/{run.info.run_id}/artifacts/" in k]
    assert {k.rsplit("/", 1)[1] for k in stored} >= ARTIFACTS  # the server's --artifacts-destination got the upload


def test_unreachable_server_fails_in_one_line(tmp_path):
    port = free_port()  # closed again at once: nothing listens there
    out = tmp_path / "never"
    done = run_tracked(f"http://127.0.0.1:{port}", out, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith(f"error: MLflow server http://127.0.0.1:{port} is unreachable (")
    assert "start it (mlflow server --host 127.0.0.1)" in lines[0]
    assert not out.exists()
