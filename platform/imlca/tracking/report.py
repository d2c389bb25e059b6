"""`imlca report`: Ā, last accuracy and forgetting per benchmark × method (mean ± std over seeds) from MLflow."""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

from imlca.tracking.paper_results import BENCHMARKS, RECORDED
from imlca.registries import METHODS
from imlca.tracking.store import PARENT_TAG, Tracker

METRICS = ("avg_acc", "last_acc", "forgetting")  # the plain table's columns; forgetting is this platform's
# `--paper` adds the authors' forgetting (core/metrics.py) and LAMDA-PILOT's sample-weighted Ā
COLLECTED = (*METRICS, "forgetting_authors", "avg_acc_weighted")


@dataclass
class TrialRecord:
    """One finished run or sweep trial as the report sees it (MLflow params are strings)."""
    run_id: str
    name: str
    benchmark: str
    rule: str
    seed: int
    params: dict[str, str]
    metrics: dict[str, float]

    def method_metrics(self, method: str) -> dict[str, float]:
        return {m: self.metrics[f"{method}/{m}"] for m in COLLECTED if f"{method}/{m}" in self.metrics}

    @property
    def methods(self) -> list[str]:
        return [m for m in METHODS if f"{m}/avg_acc" in self.metrics]


def records(tracker: Tracker, parent: str | None = None) -> list[TrialRecord]:
    """Finished runs and trials (of one sweep with `parent`), oldest first."""
    query = "attributes.status = 'FINISHED'"
    if parent:
        query += f" and tags.`{PARENT_TAG}` = '{parent}'"
    runs = tracker.client.search_runs([tracker.experiment_id], filter_string=query, order_by=["start_time ASC"],
                                      max_results=50000)
    return [TrialRecord(run.info.run_id, run.info.run_name, run.data.tags["benchmark"], run.data.tags["merge_rule"],
                        int(run.data.tags["seed"]), dict(run.data.params), dict(run.data.metrics))
            for run in runs if run.data.tags.get("imlca.kind") in ("run", "trial")]


def latest_sweep_records(uri: str, experiment: str, since: float = 0.0) -> list[TrialRecord]:
    """The finished trials of the newest sweep started after `since` (seconds since the epoch)."""
    tracker = Tracker(uri, experiment)
    parents = tracker.client.search_runs([tracker.experiment_id], filter_string=(
        f"tags.`imlca.kind` = 'sweep' and attributes.start_time >= {int(since * 1000)}"),
        order_by=["start_time DESC"], max_results=1)
    return records(tracker, parents[0].info.run_id) if parents else []


def table_of(found: list[TrialRecord]) -> dict[tuple[str, str, str], dict[int, dict[str, float]]]:
    """(benchmark, merge rule, method) → seed → metrics of the newest record; every method a run scored counts."""
    table: dict = defaultdict(dict)
    for record in found:
        for method in record.methods:
            table[(record.benchmark, record.rule, method)][record.seed] = record.method_metrics(method)
    return dict(table)


def collect(tracker: Tracker, parent: str | None = None) -> dict[tuple[str, str, str], dict[int, dict[str, float]]]:
    return table_of(records(tracker, parent))


def mean_std(values: list[float]) -> str:
    """`mean ± std` over seeds; a single seed has no spread to show: `mean (n=1)`."""
    if len(values) == 1:
        return f"{values[0]:6.2f} (n=1)"
    return f"{statistics.fmean(values):6.2f} ± {statistics.stdev(values):4.2f}"


def format_table(table: dict) -> list[str]:
    lines = ["| benchmark | merge | method | seeds | Ā | last accuracy | forgetting |", "|---|---|---|---|---|---|---|"]
    for (benchmark, rule, method), seeds in sorted(table.items()):
        cells = [mean_std([s[m] for s in seeds.values() if m in s]) for m in METRICS]
        lines.append(f"| {benchmark} | {rule} | {METHODS[method].label} | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def _per_benchmark(table: dict, benchmark: str, method: str, metric: str) -> list[float]:
    return [s[metric] for (b, _, m), seeds in table.items() if (b, m) == (benchmark, method)
            for s in seeds.values() if metric in s]


def _recorded(cell: tuple[float, float | None]) -> str:
    mean, std = cell
    return f"{mean:6.2f}" + (f" ± {std:4.2f}" if std is not None else " " * 7)


def format_paper(table: dict) -> list[str]:
    """A row per benchmark and method: ours (Ā task-balanced, mean ± std over seeds) beside the recorded number
    (mean ± std where recorded) and the difference; "not run" where no run of ours exists. Then LAMDA-PILOT's
    sample-weighted Ā and the authors' forgetting (max over every row, including the last) of the methods run."""
    lines = [f"{'benchmark':15s} {'method':8s} {'ours':>15s} {'recorded':>15s} {'diff':>6s}"]
    for benchmark in BENCHMARKS:
        for method, recorded in RECORDED.items():
            values = _per_benchmark(table, benchmark, method, "avg_acc")
            ours = mean_std(values) if values else "not run"
            diff = f"{statistics.fmean(values) - recorded[benchmark][0]:+6.2f}" if values else ""
            lines.append(f"{benchmark:15s} {METHODS[method].label:8s} {ours:>15s} {_recorded(recorded[benchmark]):>15s} "
                         f"{diff:>6s}".rstrip())
    lines += ["", "Ā sample-weighted (LAMDA-PILOT's) and forgetting by the authors' definition (mean over old tasks "
              "of max over all rows − last row)", f"{'benchmark':15s} {'method':8s} {'Ā weighted':>15s} "
              f"{'forgetting':>15s}"]
    for benchmark in BENCHMARKS:
        for method in METHODS:
            weighted, forgetting = (_per_benchmark(table, benchmark, method, m)
                                    for m in ("avg_acc_weighted", "forgetting_authors"))
            if weighted or forgetting:
                lines.append(f"{benchmark:15s} {METHODS[method].label:8s} {mean_std(weighted) if weighted else '-':>15s} "
                             f"{mean_std(forgetting) if forgetting else '-':>15s}")
    return lines
