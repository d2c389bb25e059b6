"""Exported models in MLflow: a run's `model/` folder (written by `imlca.engine.export`), fetched by run id."""
from __future__ import annotations

import tempfile
from pathlib import Path

from imlca.errors import UserError, without_passwords
from imlca.tracking.store import resolve_uri


def download_model(run_id: str, uri: str | None = None) -> Path:
    """The run's `model/` artifacts in a local folder; one line naming the fix when the run has none."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=resolve_uri(uri))
    try:
        folder = client.download_artifacts(run_id, "model", tempfile.mkdtemp(prefix="imlca-model-"))
    except (MlflowException, OSError) as err:
        reason = without_passwords(str(err).splitlines()[0])[:120]
        raise UserError(f"no exported model for '{run_id}' ({reason}); give a folder holding model.json or the id "
                        "of a finished tracked run") from None
    if not (Path(folder) / "model.json").is_file():
        raise UserError(f"run {run_id} has no model/model.json; re-run it with this version of imlca")
    return Path(folder)
