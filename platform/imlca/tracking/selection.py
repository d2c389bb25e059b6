"""`imlca report --select KEY`: tracked runs that differ in one config key (e.g. align.lam), scored on validation Ā,
one value chosen on validation per benchmark × merge rule, and the test numbers of the chosen value beside it.
Test numbers are shown, never used to choose. IM+CA, scored on the same trajectories, is shown as the reference."""
from __future__ import annotations

import statistics
from collections import defaultdict

from imlca.tracking.report import mean_std
from imlca.tracking.store import PARENT_TAG, Tracker

SELECT_ON = "val_avg_acc"
COLUMNS = (("val_avg_acc", "validation Ā"), ("avg_acc", "test Ā"), ("last_acc", "test last"),
           ("forgetting", "test forgetting"))
REFERENCE = "im_ca"


def _sort_key(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def collect_values(tracker: Tracker, key: str, parent: str | None = None) -> dict:
    """(benchmark, merge rule) → value of `key` (the reference method: "IM+CA") → seed → metrics."""
    query = "attributes.status = 'FINISHED'" + (f" and tags.`{PARENT_TAG}` = '{parent}'" if parent else "")
    runs = tracker.client.search_runs([tracker.experiment_id], filter_string=query, order_by=["start_time ASC"],
                                      max_results=50000)
    table: dict = defaultdict(lambda: defaultdict(dict))
    references: dict = defaultdict(lambda: defaultdict(list))  # group → seed → IM+CA's metrics of every run
    for run in runs:
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        if tags.get("imlca.kind") not in ("run", "trial") or SELECT_ON not in metrics or key not in params:
            continue
        group, seed = (tags["benchmark"], tags["merge_rule"]), int(tags["seed"])
        table[group][params[key]][seed] = {m: metrics[m] for m, _ in COLUMNS if m in metrics}
        if f"{REFERENCE}/{SELECT_ON}" in metrics:
            references[group][seed].append({m: metrics[f"{REFERENCE}/{m}"] for m, _ in COLUMNS
                                            if f"{REFERENCE}/{m}" in metrics})
    for group, seeds in references.items():
        # a reference only where the key leaves IM+CA alone (align.lam does; train.lr changes the trajectory)
        if all(all(row == rows[0] for row in rows) for rows in seeds.values()):
            table[group]["IM+CA"] = {seed: rows[0] for seed, rows in seeds.items()}
    return table


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    return mean_std(values)


def chosen_value(by_value: dict) -> str:
    """The value of the key with the highest mean validation Ā over seeds (the reference is never chosen)."""
    candidates = {v: seeds for v, seeds in by_value.items() if v != "IM+CA"}
    return max(candidates, key=lambda v: statistics.fmean(s[SELECT_ON] for s in candidates[v].values()))


def format_selection(table: dict, key: str) -> list[str]:
    header = f"| benchmark | merge | {key} | seeds | " + " | ".join(name for _, name in COLUMNS) + " | |"
    lines = [header, "|---" * (len(COLUMNS) + 5) + "|"]
    summary = []
    for (benchmark, rule), by_value in sorted(table.items()):
        chosen = chosen_value(by_value)
        for value in sorted(by_value, key=_sort_key):
            seeds = by_value[value]
            cells = [_cell([s[m] for s in seeds.values() if m in s]) for m, _ in COLUMNS]
            mark = "chosen on validation" if value == chosen else ""
            lines.append(f"| {benchmark} | {rule} | {value} | {len(seeds)} | " + " | ".join(cells) + f" | {mark} |")
        test = _cell([s["avg_acc"] for s in by_value[chosen].values()])
        summary.append(f"{benchmark} / {rule}: {key}={chosen} chosen on validation Ā; its test Ā {test}")
    return lines + [""] + summary
