"""Run records that outlive the head node (issue 21): the head's MLflow server on a real PostgreSQL database,
started as the cluster configs start it (cluster/start_mlflow.sh, password from a pgpass file), a sweep tracked
there, the server lost with its disk and started on a fresh one: `imlca report` still shows every run. A sqlite
store is copied to the sweep's bucket (moto S3) at the sweep's end and `imlca report --uri s3://...` reads it.
A wrong password or an unreachable database is one line naming the cause and the fix."""
from __future__ import annotations

import re
import sqlite3
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO
from postgres import postgres_server
from servers import clean_env, free_port, kill_session

START_MLFLOW = REPO / "cluster" / "start_mlflow.sh"
SMOKE = REPO / "tests" / "data" / "sweeps" / "cluster_smoke.yaml"  # two trials, one epoch a phase
ONE_TRIAL = REPO / "tests" / "data" / "sweeps" / "cluster_one_trial.yaml"


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as server:
        yield server


def imlca(*args: str, env: dict[str, str], cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imlca", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def head_env(postgres, head: Path, port: int, tmp_path: Path) -> dict[str, str]:
    """What the cluster configs give the head's container: the database's URI without its password, and the
    password in a pgpass file (mounted from the laptop there)."""
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{postgres.port}:{postgres.database}:{postgres.user}:{postgres.password}\n")
    pgpass.chmod(0o600)  # libpq ignores a password file that others can read
    return clean_env(IMLCA_MLFLOW_DB=postgres.uri().replace(f":{postgres.password}@", "@"),
                     PGPASSFILE=str(pgpass), IMLCA_MLFLOW_STORE=str(head), IMLCA_MLFLOW_PORT=str(port))


def start_head_server(env: dict[str, str], artifacts: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(START_MLFLOW), str(artifacts), "--host", "127.0.0.1", "--workers", "1"],
                          env=env, capture_output=True, text=True, timeout=240)


def stop_head_server(head: Path) -> None:
    pidfile = head / "mlflow.pid"
    if pidfile.is_file():
        kill_session(int(pidfile.read_text()))  # start_mlflow.sh runs the server in a session of its own


def finished_runs(uri: str) -> dict[str, tuple[str, str, float | None]]:
    """run id → (kind, status, final avg_acc) of every run of the `imlca` experiment."""
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("imlca").experiment_id])
    return {r.info.run_id: (r.data.tags["imlca.kind"], r.info.status, r.data.metrics.get("avg_acc")) for r in runs}


@pytest.mark.slow
def test_sweep_on_postgres_survives_the_head(ray_cluster, postgres, tmp_path, monkeypatch):
    from imlca.config.sweep import load_sweep
    from imlca.orchestration.launch import launch_sweep

    first, second = tmp_path / "head1", tmp_path / "head2"  # the lost head's disk, then the new head's
    first.mkdir(), second.mkdir()
    ports = [free_port(), free_port()]
    try:
        started = start_head_server(head_env(postgres, first, ports[0], tmp_path), tmp_path / "artifacts")
        assert started.returncode == 0, started.stderr + (first / "mlflow.log").read_text()[-3000:]
        assert started.stderr == ""  # no warning: the records are in the database, not on the head's disk
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{ports[0]}")  # as on the head
        sweep = load_sweep(SMOKE)
        sweep.cfg.storage_path = str(tmp_path / "ray_results")
        assert launch_sweep(sweep) == 0
        before = finished_runs(f"http://127.0.0.1:{ports[0]}")
        assert sorted(kind for kind, _, _ in before.values()) == ["sweep", "trial", "trial"]
        assert {status for _, status, _ in before.values()} == {"FINISHED"}

        stop_head_server(first)
        shutil.rmtree(first)  # `ray down`, or a lost head: its disk goes with it
        postgres.restart()
        started = start_head_server(head_env(postgres, second, ports[1], tmp_path), tmp_path / "artifacts")
        assert started.returncode == 0, started.stderr + (second / "mlflow.log").read_text()[-3000:]
        new_head = f"http://127.0.0.1:{ports[1]}"
        assert finished_runs(new_head) == before
        done = imlca("report", "--uri", new_head, "--format", "html", "--out", str(tmp_path / "report"),
                     env=clean_env())
        assert done.returncode == 0, done.stderr[-3000:]
        page = (tmp_path / "report" / "report.html").read_text()
        trials = [run_id for run_id, (kind, _, _) in before.items() if kind == "trial"]
        assert all(run_id in page for run_id in trials)  # every run, by its MLflow id
    finally:
        stop_head_server(first)
        stop_head_server(second)


@pytest.mark.parametrize("case, cause, fix", [
    ("wrong password", 'refused the login (FATAL: password authentication failed for user "imlca")',
     "check the user and password"),
    ("no password", "refused the login (fe_sendauth: no password supplied)", "PGPASSFILE"),
    ("closed port", "is unreachable (Connection refused", "start the database, or fix its host, port and name"),
])
def test_a_database_that_refuses_is_one_line(postgres, case, cause, fix, tmp_path):
    uri = {"wrong password": postgres.uri(password="not-the-password"),
           "no password": postgres.uri().replace(f":{postgres.password}@", "@"),
           "closed port": postgres.uri(port=free_port())}[case]
    shown = re.sub(r":[^:@/]+@", ":***@", uri) if case != "no password" else uri
    done = imlca("report", "--uri", uri, env=clean_env(PGPASSFILE=str(tmp_path / "none")), timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: PostgreSQL tracking database {shown} {cause}") and fix in line
    assert "not-the-password" not in line and postgres.password not in line


def test_head_server_with_a_wrong_password_stops_in_one_line(postgres, tmp_path):
    env = head_env(postgres, tmp_path, free_port(), tmp_path)
    (tmp_path / "pgpass").write_text(f"*:*:*:{postgres.user}:not-the-password\n")
    try:
        done = start_head_server(env, tmp_path / "artifacts")
        assert done.returncode == 2 and not (tmp_path / "mlflow.pid").exists()  # no server started
    finally:
        stop_head_server(tmp_path)
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: PostgreSQL tracking database postgresql://imlca@127.0.0.1:")
    assert "password authentication failed" in line and "PGPASSFILE" in line


@pytest.mark.slow
def test_sqlite_store_is_copied_to_the_bucket_and_reported_from_there(s3, tmp_path):
    storage = f"s3://{s3.bucket}/tracking-copy"
    local = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = clean_env(**s3.env, MLFLOW_TRACKING_URI=local, IMLCA_STORAGE=storage)
    done = imlca("sweep", str(ONE_TRIAL), env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (copied,) = re.findall(r"^tracking store copied to (\S+) ", done.stdout, re.M)
    assert re.fullmatch(rf"{storage}/cluster_one_trial-\d{{8}}-\d{{6}}/mlflow\.db", copied)

    reader = clean_env(**s3.env)  # no MLFLOW_TRACKING_URI: --uri alone names the store
    report = imlca("report", "--uri", copied, "--format", "html", "--out", str(tmp_path / "report"), env=reader)
    assert report.returncode == 0, report.stderr[-3000:]
    runs = finished_runs(local)
    assert sorted((kind, status) for kind, status, _ in runs.values()) == [("sweep", "FINISHED"),
                                                                           ("trial", "FINISHED")]
    page = (tmp_path / "report" / "report.html").read_text()
    assert all(run_id in page for run_id, (kind, _, _) in runs.items() if kind == "trial")

    missing = imlca("report", "--uri", f"{storage}/nothing-here/mlflow.db", env=reader)
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [f"error: no tracking store at {storage}/nothing-here/mlflow.db; give the "
                                           "mlflow.db that a sweep copied to its bucket (the sweep prints its URI at "
                                           "the end: <storage_path>/<sweep>-<time>/mlflow.db)"]


def test_the_heads_sqlite_file_is_found_and_copied_consistently(tmp_path, monkeypatch):
    from imlca.tracking.database import snapshot, sqlite_file

    db = tmp_path / "mlflow.db"
    writer = sqlite3.connect(db)
    writer.execute("CREATE TABLE runs (id TEXT)")
    writer.execute("INSERT INTO runs VALUES ('finished')")
    writer.commit()
    monkeypatch.setenv("IMLCA_MLFLOW_DB", f"sqlite:///{db}")  # the head's server keeps sqlite (cluster configs)
    assert sqlite_file(f"sqlite:///{db}") == db
    assert sqlite_file("http://127.0.0.1:5000") == db  # the driver on the head tracks through that server
    assert sqlite_file("http://mlflow.example.org:5000") is None  # another machine's server: not this file
    assert sqlite_file(f"sqlite:///{tmp_path / 'absent.db'}") is None
    monkeypatch.setenv("IMLCA_MLFLOW_DB", "postgresql://imlca@db:5432/imlca")
    assert sqlite_file("http://127.0.0.1:5000") is None  # the records are in the database server already

    writer.execute("INSERT INTO runs VALUES ('half-written')")  # a write in progress, not committed
    snapshot(db, tmp_path / "copy.db")
    writer.rollback()
    writer.close()
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("SELECT id FROM runs").fetchall() == [("finished",)]
    copy.close()
