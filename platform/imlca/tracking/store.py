"""MLflow through its client, from the driver only: a parent run per sweep, a nested run per trial.

Tracking URI: $MLFLOW_TRACKING_URI (MLflow's own convention) wins, else the config's, else sqlite:///mlflow.db; an
http server or a PostgreSQL database (tracking/database.py) is checked before anything runs.
"""
from __future__ import annotations

import base64
import contextlib
import io
import math
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from imlca.errors import TrackingError, without_passwords
from imlca.tracking.database import check_store, with_driver

DEFAULT_URI = "sqlite:///mlflow.db"
PARENT_TAG, TRIAL_TAG = "mlflow.parentRunId", "imlca.trial_id"
KIND_TAG = "mlflow.experimentKind"
# MLflow 3's UI opens an experiment of this kind on its runs (not on the GenAI overview of traces)
EXPERIMENT_TAGS = {KIND_TAG: "custom_model_development"}


def resolve_uri(config_uri: str | None) -> str:
    return with_driver(os.environ.get("MLFLOW_TRACKING_URI") or config_uri or DEFAULT_URI)


def ui_link(server: str, experiment_id: str) -> str:
    """The experiment's runs in the MLflow UI. MLflow 3.17's UI takes GenAI vs Model training from its own switch
    (this URL parameter, else the browser's last choice) before the experiment's kind tag."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail before any training when an MLflow server does not answer its /health endpoint, or a PostgreSQL
    store refuses a connection."""
    if not uri.startswith(("http://", "https://")):
        check_store(uri)
        return
    shown = without_passwords(uri)
    try:
        with urllib.request.urlopen(health_request(uri), timeout=timeout) as reply:
            if reply.status == 200:
                return
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = without_passwords(str(getattr(err, "reason", err)))
        raise TrackingError(f"MLflow server {shown} is unreachable ({reason}); start it (mlflow server --host "
                            "127.0.0.1) or point MLFLOW_TRACKING_URI / tracking.uri at a running one") from None
    raise TrackingError(f"MLflow server {shown} answered /health with an error; check the server's log")


def health_request(uri: str) -> urllib.request.Request:
    """GET <server>/health; a `user:password@` in the URI (MLflow's client sends it as basic auth) sent as the
    same header, the URL without it (urllib reads it as part of the host)."""
    parts = urlsplit(uri.rstrip("/") + "/health")
    if parts.username is None and parts.password is None:
        return urllib.request.Request(parts.geturl())
    login = base64.b64encode(f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()).decode()
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return urllib.request.Request(bare, headers={"Authorization": f"Basic {login}"})


def artifact_location(uri: str) -> str | None:
    """Artifacts of a sqlite store live beside the database (not in ./mlruns of whatever folder the driver ran
    in, e.g. a Ray job's temporary working dir); a server decides for itself (--artifacts-destination)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()


def git_commit() -> str:
    try:
        # the checkout imlca runs from, wherever the command was started
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def numeric_metrics(report: dict) -> dict[str, float]:
    """MLflow metrics: the finite numbers of a task report (NaN marks 'not aligned at task 0')."""
    return {k: float(v) for k, v in report.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _param_value(value: Any) -> str:
    return str(value)[:6000]


class Tracker:
    def __init__(self, uri: str, experiment: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self._create(experiment)
        if found is not None and found.tags.get(KIND_TAG) != EXPERIMENT_TAGS[KIND_TAG]:
            self.client.set_experiment_tag(self.experiment_id, KIND_TAG, EXPERIMENT_TAGS[KIND_TAG])

    def _create(self, experiment: str) -> str:
        """A new experiment's id; when another process (a second sweep started at the same time) created it first,
        that one's."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(experiment, artifact_location=artifact_location(self.uri),
                                                 tags=EXPERIMENT_TAGS)
        except MlflowException as err:
            found = self.client.get_experiment_by_name(experiment)
            if err.error_code != "RESOURCE_ALREADY_EXISTS" or found is None:
                raise
            return found.experiment_id

    def start_run(self, name: str, params: dict, tags: dict, parent_id: str | None = None) -> str:
        tags = {k: str(v) for k, v in tags.items()}
        if parent_id:
            tags[PARENT_TAG] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit is 100 params
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in numeric_metrics(metrics).items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, local_dir, artifact_path)

    def log_figure(self, run_id: str, figure, artifact_file: str) -> None:
        self.client.log_figure(run_id, figure, artifact_file)

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, local_path, artifact_path)

    def log_dataset(self, run_id: str, name: str, digest: str, source: dict[str, str], context: str) -> None:
        """The benchmark as a run input (MLflow's Datasets panel): metadata only, the images stay where they are."""
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        dataset = MetaDataset(CodeDatasetSource(tags=source), name=name, digest=digest[:36])
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(),
                                                              [InputTag("mlflow.data.context", context)])])

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        printed = io.StringIO()  # MLflow prints the run's link, built from the URI with its password
        with contextlib.redirect_stdout(printed):
            self.client.set_terminated(run_id, status)
        print(without_passwords(printed.getvalue()), end="", flush=True)

    def find_trial_run(self, parent_id: str, trial_id: str) -> str | None:
        """The run already made for a trial of this sweep (a restored sweep reuses it: no duplicates)."""
        runs = self.client.search_runs([self.experiment_id], filter_string=(
            f"tags.`{PARENT_TAG}` = '{parent_id}' and tags.`{TRIAL_TAG}` = '{trial_id}'"))
        return runs[0].info.run_id if runs else None

    def status(self, run_id: str) -> str:
        """RUNNING, FINISHED, FAILED or KILLED."""
        return self.client.get_run(run_id).info.status

    def last_step(self, run_id: str, metric: str) -> int:
        """The highest step logged for `metric` (-1 when none)."""
        return max((m.step for m in self.client.get_metric_history(run_id, metric)), default=-1)
