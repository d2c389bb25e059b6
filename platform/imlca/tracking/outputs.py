"""What finished runs and sweeps leave in MLflow besides metrics: a run's files and figures, a sweep's report.

A run's figures are drawn from the accuracy matrices in its `results.json` (the same numbers as its `acc_j`
metrics): A_t per task for every method and one accuracy-matrix heatmap per method. A sweep's parent run gets the
HTML report, the sweep figures and the best trial's final metrics (`best/<metric>`).
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from imlca.tracking import figures
from imlca.tracking.report import records
from imlca.tracking.store import Tracker

FIGURES = "figures"


def run_figures(acc: dict[str, list[list[float]]]) -> dict[str, object]:
    """Artifact path → Figure, for one run's accuracy matrices (method → rows)."""
    drawn = {f"{FIGURES}/accuracy_curves.png": figures.accuracy_curves(acc)}
    for method, rows in acc.items():
        drawn[f"{FIGURES}/accuracy_matrix_{method}.png"] = figures.accuracy_heatmap(
            rows, f"{figures.label(method)}: accuracy matrix (%)")
    return drawn


def log_run_outputs(tracker: Tracker, run_id: str, folder: Path) -> None:
    """A run's files (config, results, CSVs, tensors) and the figures of its `results.json`."""
    tracker.log_artifacts(run_id, str(folder))
    results = folder / "results.json"
    if results.is_file():
        acc = {m: rows for m, rows in json.loads(results.read_text())["acc"].items() if rows}
        for path, fig in run_figures(acc).items():
            tracker.log_figure(run_id, fig, path)


def system_metrics(uri: str, run_id: str):
    """MLflow's CPU / memory (/ GPU) sampler on `run_id`, every 10 s; None where MLflow cannot sample here."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # its start/stop INFO lines would sit between a run's own output lines (and before a one-line error)
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
        monitor = SystemMetricsMonitor(run_id, sampling_interval=10, samples_before_logging=1, tracking_uri=uri)
        monitor.start()
        return monitor
    except (ImportError, RuntimeError, OSError):
        return None


def best_record(found: list, metric: str, mode: str):
    scored = [r for r in found if metric in r.metrics]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: r.metrics[metric])


def finish_sweep(tracker: Tracker, parent_id: str, title: str, metric: str = "avg_acc",
                 mode: str = "max") -> str | None:
    """Log `report.html` for the sweep's finished trials, the sweep figures and the best trial's final metrics to
    the parent run. Returns the page's HTML (None when no trial finished), for the caller to keep beside the
    sweep's Tune state (a folder or a bucket)."""
    from imlca.tracking.report_pages import build_report, html_page

    found = records(tracker, parent_id)
    if not found:
        return None
    report = build_report(title, found)
    page = html_page(report)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "report.html").write_text(page)
        tracker.log_artifact(parent_id, str(Path(tmp) / "report.html"))
        figures = Path(tmp) / FIGURES
        figures.mkdir()
        for i, (caption, png) in enumerate(report.figures):
            name = "".join(c if c.isalnum() or c in "._-" else "_" for c in caption)
            (figures / f"{i}_{name}.png").write_bytes(png)
        tracker.log_artifacts(parent_id, str(figures), FIGURES)
    best = best_record(found, metric, mode)
    if best is not None:
        tracker.log_metrics(parent_id, {f"best/{k}": v for k, v in best.metrics.items()}, step=0)
        tracker.set_tag(parent_id, "best_run", best.name)
        tracker.set_tag(parent_id, "best_run_id", best.run_id)
    return page
