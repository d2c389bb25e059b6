"""No credential lands in a file, store, param or message a run writes (docs/security.md): a password in a config
is refused (the config is saved with every run and logged to MLflow), one in $MLFLOW_TRACKING_URI is used and
shown as ***, and a tracked run given secrets in its environment leaves none of them anywhere it writes."""
from __future__ import annotations

import base64
import pickle
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY
from servers import clean_env, free_port, mlflow_server

SECRET = f"pw{secrets.token_hex(8)}"


@pytest.mark.parametrize("key, value", [("tracking.uri", f"postgresql://imlca:{SECRET}@127.0.0.1:5432/mlflow"),
                                        ("tracking.uri", f"http://imlca:{SECRET}@127.0.0.1:5000"),
                                        ("data.root", f"s3://AKIAEXAMPLE:{SECRET}@bucket/data")])
def test_a_password_in_the_config_is_refused_without_showing_it(key, value, tmp_path, monkeypatch, capsys):
    from imlca.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["run", str(TINY), "--set", f"{key}={value}", "--out", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: config key '{key}': holds a password (user:password@ in a URI)")
    assert "PGPASSWORD" in line and "MLFLOW_TRACKING_PASSWORD" in line and SECRET not in line
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_server_with_a_password_in_its_uri_is_one_line_without_it(tmp_path, monkeypatch, capsys):
    from imlca.cli import main

    port = free_port()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://imlca:{SECRET}@127.0.0.1:{port}")
    assert main(["run", str(TINY), "--track", "--out", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: MLflow server http://imlca:***@127.0.0.1:{port} is unreachable (")
    assert SECRET not in line and list(tmp_path.iterdir()) == []


def test_a_sweeps_saved_callback_holds_no_password_and_a_restored_one_gets_it_back(monkeypatch):
    """Tune pickles the MLflow callback into the sweep's state (its storage, maybe a bucket) to restore it."""
    from imlca.orchestration.mlflow_callback import MlflowSweepCallback

    uri = f"http://imlca:{SECRET}@127.0.0.1:5000"
    saved = pickle.dumps(MlflowSweepCallback(uri, "imlca", "sweep", {}, {}, "/nonexistent/sweep"))
    assert SECRET.encode() not in saved
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the resumed sweep's environment
    assert pickle.loads(saved).uri == uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")  # another store: no password to restore
    assert pickle.loads(saved).uri == "http://imlca:***@127.0.0.1:5000"


@pytest.mark.slow
def test_a_tracked_run_leaves_no_secret_in_any_file_store_or_log(tmp_path):
    """`imlca run --track` against a real `mlflow server`, a password in the tracking URI and secrets in the
    environment (as on a cluster node); then every byte of the outputs, the server's store, artifacts and log, the
    working folder and the run's console output is searched for each secret."""
    server_root, work = tmp_path / "server", tmp_path / "work"
    server_root.mkdir(), work.mkdir()
    given = {"password": f"pw-{secrets.token_hex(8)}", "aws": f"aws-{secrets.token_hex(8)}",
             "pg": f"pg-{secrets.token_hex(8)}"}
    with mlflow_server(server_root) as server:
        uri = server.replace("http://", f"http://imlca:{given['password']}@")
        env = clean_env(PYTHONPATH=str(REPO / "platform"), MLFLOW_TRACKING_URI=uri, PGPASSWORD=given["pg"],
                        AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY=given["aws"])
        done = subprocess.run([sys.executable, "-m", "imlca", "run", str(TINY), "--track", "--out",
                               str(work / "out")], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (work / "out" / "model" / "model.json").is_file() and list((server_root / "artifacts").rglob("*.json"))
    wanted = {*given.values(), base64.b64encode(f"imlca:{given['password']}".encode()).decode()}
    written = {str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    written["console"] = (done.stdout + done.stderr).encode()
    assert len(written) > 20  # outputs, model, the store, artifacts, logs
    found = {where: data[max(0, data.find(secret.encode()) - 200):data.find(secret.encode()) + 50]
             for where, data in written.items() for secret in wanted if secret.encode() in data}
    assert found == {}
