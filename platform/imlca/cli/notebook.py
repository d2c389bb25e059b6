"""The notebook API: `imlca.run(config, overrides=...)`, `imlca.sweep(sweep_file, overrides=...)`, `imlca.load(...)`.

Overrides are the dotted keys of `--set` with Python values: `{"align.lam": 0.3, "lora.rank": 16}`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from imlca.config import ExperimentConfig, from_dict, read_config_tree, set_dotted


def experiment(config: str | Path | None = None, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """The validated config of `config` (YAML, may `extends:`) with `overrides` applied."""
    tree = read_config_tree(config) if config is not None else {}
    for key, value in (overrides or {}).items():
        set_dotted(tree, key, value)
    return from_dict(ExperimentConfig, tree)


def run(config: str | Path | None = None, overrides: dict[str, Any] | None = None, out: str | Path | None = None,
        verbose: bool = False):
    """One run in this process; returns its `RunResult` (`.summary[method]["avg_acc"]`, `.acc`, `.reports`).
    With `out`, its files (config, results, accuracy CSVs, adapter, heads, `model/`) are written there too."""
    from imlca.engine.artifacts import write_run
    from imlca.engine.protocol import run_protocol
    from imlca.engine.runner import preflight

    cfg = experiment(config, overrides)
    preflight(cfg)
    result = run_protocol(cfg, on_task=_print_task if verbose else None)
    if out is not None:
        from imlca.engine.export import export_run_folder

        write_run(Path(out), cfg, result)
        export_run_folder(Path(out), cfg)
    return result


def _print_task(report: dict) -> None:
    from imlca.cli.progress import task_summary

    print(task_summary(report, [k[: -len("/A_t")] for k in report if k.endswith("/A_t")]), flush=True)


def sweep(sweep_file: str | Path, overrides: dict[str, Any] | None = None):
    """A Ray Tune sweep tracked in MLflow, as `imlca sweep` runs it; returns a pandas DataFrame with one row per
    finished trial: run name and id, swept values, and every method's Ā, last accuracy and forgetting."""
    from imlca.config.sweep import load_sweep
    from imlca.orchestration.launch import launch_sweep
    from imlca.tracking.report import latest_sweep_records
    from imlca.tracking.store import resolve_uri

    swept = load_sweep(sweep_file)
    for key, value in (overrides or {}).items():
        set_dotted(swept.base_tree, key, value)
    swept.validate()
    base = from_dict(ExperimentConfig, swept.base_tree)
    started = time.time()
    launch_sweep(swept)
    found = latest_sweep_records(resolve_uri(base.tracking.uri), base.tracking.experiment, since=started)
    return trials_frame(found, list(swept.cfg.space))


def trials_frame(found: list, keys: list[str]):
    import pandas as pd

    rows = []
    for record in found:
        row = {"run": record.name, "run_id": record.run_id, "benchmark": record.benchmark, "seed": record.seed}
        row.update({key: record.params.get(key) for key in keys})
        row.update({k: v for k, v in record.metrics.items() if k.split("/")[-1] in ("avg_acc", "last_acc",
                                                                                       "forgetting")})
        rows.append(row)
    return pd.DataFrame(rows)


def load(source: str | Path, uri: str | None = None):
    """A model that names the classes of images (`.predict(paths or PIL images)`), from a folder written by
    `imlca.engine.export` (or a run folder holding `model/`), or from the MLflow run id whose `model/` artifacts
    hold one (tracking URI: `uri`, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."""
    from imlca.engine.export import ExportedModel

    path = Path(source)
    if (path / "model" / "model.json").is_file():
        path = path / "model"
    if not (path / "model.json").is_file():
        from imlca.tracking.models import download_model

        path = download_model(str(source), uri)
    return ExportedModel(path)
