"""The report of finished runs as a page: the table (mean ± std over seeds, best in bold), the sweep's figures,
robustness where present, rendered as Markdown, CSV, LaTeX or one self-contained HTML file.

No MLflow here: the records come from `imlca.tracking.report.records` (or anything with the same fields).
"""
from __future__ import annotations

import base64
import csv
import html
import io
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from imlca.tracking import figures
from imlca.registries import METHODS
from imlca.tracking.report import mean_std

METRICS = ("avg_acc", "last_acc", "forgetting")
HEADERS = {"avg_acc": "Ā", "last_acc": "last accuracy", "forgetting": "forgetting"}
LOWER_IS_BETTER = {"forgetting"}
NOT_SWEPT = ("seed", "name", "output_dir", "align.method", "family")  # params that vary without being a setting
# to compare (the method is a row's own column and a series of every figure)
ROBUSTNESS = ("c_mean", "p_frame_acc", "p_flip_rate")


@dataclass
class Row:
    benchmark: str
    rule: str
    setting: str  # the other swept values, e.g. "align.lam=0.1" ("" when only rules, benchmarks, seeds vary)
    method: str
    values: dict[str, list[float]]  # metric → one value per seed

    def stats(self, metric: str) -> tuple[float, float] | None:
        return figures.mean_std(self.values[metric]) if self.values.get(metric) else None

    @property
    def seeds(self) -> int:
        return len(self.values["avg_acc"])


@dataclass
class Report:
    title: str
    rows: list[Row]
    best: set[tuple[int, str]]  # (row index, metric) shown in bold
    figures: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)
    robustness: list[tuple[str, str, dict[str, float]]] = field(default_factory=list)  # (run name, method, metrics)
    trials: list = field(default_factory=list)  # the records, for the per-run list


def setting_of(record, keys: list[str]) -> str:
    return " ".join(f"{k}={record.params[k]}" for k in keys if k in record.params)


def build_rows(found: list) -> list[Row]:
    """One row per benchmark × merge rule × other swept setting × method; the newest record per seed counts."""
    keys = [k for k in swept_keys(found) if k not in ("data.benchmark", "merge.rule")]
    groups: dict = defaultdict(dict)
    for record in found:
        for method in record.methods:
            key = (record.benchmark, record.rule, setting_of(record, keys), method)
            groups[key][record.seed] = record.method_metrics(method)
    order = {m: i for i, m in enumerate(METHODS)}
    rows = [Row(b, r, setting, m, {k: [s[k] for s in seeds.values() if k in s] for k in METRICS})
            for (b, r, setting, m), seeds in groups.items()]
    return sorted(rows, key=lambda row: (row.benchmark, row.rule, row.setting, order.get(row.method, 99)))


def best_cells(rows: list[Row]) -> set[tuple[int, str]]:
    """Per benchmark and metric, the row(s) with the best mean: highest accuracy, lowest forgetting."""
    best = set()
    for benchmark in {row.benchmark for row in rows}:
        for metric in METRICS:
            means = {i: row.stats(metric)[0] for i, row in enumerate(rows)
                     if row.benchmark == benchmark and row.stats(metric)}
            if means:
                target = (min if metric in LOWER_IS_BETTER else max)(means.values())
                best |= {(i, metric) for i, v in means.items() if round(v, 2) == round(target, 2)}
    return best


def _number(text: str):
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def swept_keys(found: list) -> list[str]:
    """Params whose value differs between the records (the sweep's axes), seed and names excluded."""
    keys = set().union(*(r.params for r in found)) if found else set()
    return sorted(k for k in keys if k not in NOT_SWEPT and not k.startswith("tracking.")
                  and len({r.params[k] for r in found if k in r.params}) > 1)


def axis_values(found: list, key: str) -> dict[str, float | str]:
    """The key's values among the records that have it (runs of another family or an older version may not) →
    numbers where every value is one, else the text (one category each)."""
    values = {r.params[key] for r in found if key in r.params}
    numbers = {v: _number(v) for v in values}
    return numbers if all(isinstance(n, float) for n in numbers.values()) else {v: v for v in values}


def sweep_figures(found: list, headline: str = "im_lca") -> list[tuple[str, Figure]]:
    """Ā per method × benchmark (bars, seeds' spread), Ā against each swept key, λ × α-style heatmap for two:
    (caption, Figure) pairs, drawn from the records' own metrics."""
    out = []
    rules = {r.rule for r in found if r.rule != "-"}  # "-": a family that merges nothing
    label = (lambda r: r.benchmark) if len(rules) <= 1 else (lambda r: f"{r.benchmark} {r.rule}")
    bars: dict = defaultdict(list)
    for record in found:
        for method in record.methods:
            bars[(label(record), method)].append(record.metrics[f"{method}/avg_acc"])
    if bars:
        out.append(("Ā per benchmark and method", figures.method_bars(bars)))
    keys = swept_keys(found)
    axes = {key: axis_values(found, key) for key in keys}
    for key, x in axes.items():
        points: dict = defaultdict(lambda: defaultdict(list))
        for record in (r for r in found if key in r.params):
            for method in record.methods:
                points[method][x[record.params[key]]].append(record.metrics[f"{method}/avg_acc"])
        out.append((f"Ā against {key}", figures.sweep_lines(points, key)))
    if len(keys) == 2:
        cells: dict = defaultdict(list)
        for record in found:
            if f"{headline}/avg_acc" in record.metrics and all(k in record.params for k in keys):
                coords = tuple(axes[k][record.params[k]] for k in keys)
                cells[coords].append(record.metrics[f"{headline}/avg_acc"])
        if cells:
            fig = figures.sweep_heatmap(cells, keys[0], keys[1], f"{figures.label(headline)} Ā")
            out.append((f"{keys[0]} × {keys[1]}", fig))
    return out


def robustness_rows(found: list) -> list[tuple[str, str, dict[str, float]]]:
    rows = []
    for record in found:
        for method in record.methods:
            values = {k: record.metrics[f"{method}/{k}"] for k in ROBUSTNESS if f"{method}/{k}" in record.metrics}
            if values:
                rows.append((record.name, method, values))
    return rows


def build_report(title: str, found: list, with_figures: bool = True) -> Report:
    rows = build_rows(found)
    drawn = [(caption, figures.png_bytes(fig)) for caption, fig in sweep_figures(found)] if with_figures else []
    return Report(title, rows, best_cells(rows), drawn, robustness_rows(found), found)


# --- rendering ------------------------------------------------------------------------------------------------------

def _cell(report: Report, i: int, metric: str, bold: tuple[str, str]) -> str:
    values = report.rows[i].values.get(metric)
    if not values:
        return "-"
    text = mean_std(values).strip()
    return f"{bold[0]}{text}{bold[1]}" if (i, metric) in report.best else text


def label_cells(row: Row) -> list[str]:
    return [row.benchmark, row.rule, row.setting or "-", figures.label(row.method), str(row.seeds)]


LABELS = ["benchmark", "merge", "setting", "method", "seeds"]


def markdown(report: Report) -> str:
    lines = [f"# {report.title}", "", "| " + " | ".join(LABELS + [HEADERS[m] for m in METRICS]) + " |",
             "|" + "---|" * (len(LABELS) + len(METRICS))]
    for i, row in enumerate(report.rows):
        cells = label_cells(row) + [_cell(report, i, m, ("**", "**")) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    if report.robustness:
        lines += ["", "| run | method | " + " | ".join(ROBUSTNESS) + " |", "|---|---|" + "---|" * len(ROBUSTNESS)]
        for name, method, values in report.robustness:
            lines.append(f"| {name} | {figures.label(method)} | " +
                         " | ".join(f"{values[k]:.2f}" if k in values else "-" for k in ROBUSTNESS) + " |")
    return "\n".join(lines) + "\n"


def csv_text(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LABELS + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")])
    for row in report.rows:
        cells = []
        for metric in METRICS:
            stats = row.stats(metric)
            spread = f"{stats[1]:.4f}" if stats and len(row.values[metric]) > 1 else ""  # one seed: no spread
            cells += [f"{stats[0]:.4f}", spread] if stats else ["", ""]
        writer.writerow([row.benchmark, row.rule, row.setting, row.method, row.seeds] + cells)
    return buffer.getvalue()


def latex(report: Report) -> str:
    heads = {"avg_acc": r"$\bar{A}$", "last_acc": "last acc.", "forgetting": "forgetting"}
    lines = [r"\begin{tabular}{lllllr" + "c" * len(METRICS) + "}", r"\toprule",
             " & ".join(LABELS + [heads[m] for m in METRICS]) + r" \\", r"\midrule"]
    for i, row in enumerate(report.rows):
        cells = [c.replace("_", r"\_") for c in label_cells(row)]
        cells += [_cell(report, i, m, (r"\textbf{", "}")).replace("±", r"$\pm$") for m in METRICS]
        lines.append(" & ".join(cells) + r" \\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}td:nth-child(-n+4),th{text-align:left}
figure{display:inline-block;margin:0.5em}figcaption{font-size:90%;color:#555}"""


def _html_table(headers: list[str], rows: list[list[str]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def html_page(report: Report) -> str:
    """One self-contained page: every figure inlined as a base64 PNG (it can be mailed as is)."""
    main = [[html.escape(c) for c in label_cells(row)] + [_cell(report, i, m, ("<b>", "</b>")) for m in METRICS]
            for i, row in enumerate(report.rows)]
    parts = [f"<h1>{html.escape(report.title)}</h1>", "<h2>Results (mean ± std over seeds; best in bold)</h2>",
             _html_table(LABELS + [HEADERS[m] for m in METRICS], main, "results")]
    if report.figures:
        parts.append("<h2>Figures</h2>")
        for caption, png in report.figures:
            data = base64.b64encode(png).decode()
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    if report.robustness:
        rows = [[html.escape(n), figures.label(m)] + [f"{v[k]:.2f}" if k in v else "-" for k in ROBUSTNESS]
                for n, m, v in report.robustness]
        parts += ["<h2>Robustness</h2>", _html_table(["run", "method", *ROBUSTNESS], rows, "robustness")]
    if report.trials:
        methods = [m for m in METHODS if any(m in r.methods for r in report.trials)]
        rows = [[html.escape(r.name), html.escape(r.run_id)] +
                [f"{r.metrics[f'{m}/avg_acc']:.2f}" if f"{m}/avg_acc" in r.metrics else "-" for m in methods]
                for r in report.trials]
        parts += ["<h2>Runs</h2>", _html_table(["run", "MLflow run id"] + [f"{figures.label(m)} Ā" for m in methods],
                                               rows, "runs")]
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


FORMATS = {"md": ("report.md", markdown), "csv": ("report.csv", csv_text), "latex": ("report.tex", latex),
           "html": ("report.html", html_page)}


def write_report(out_dir: str | Path, fmt: str, title: str, found: list) -> Path:
    """report.<ext> in `out_dir`; Markdown and LaTeX get their figures beside them as figure_<i>.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(title, found, with_figures=fmt != "csv")
    name, render = FORMATS[fmt]
    text = render(report)
    if fmt in ("md", "latex"):
        for i, (caption, png) in enumerate(report.figures):
            (out / f"figure_{i}.png").write_bytes(png)
            text += (f"\n![{caption}](figure_{i}.png)\n" if fmt == "md" else
                     f"% figure_{i}.png: {caption}\n")
    (out / name).write_text(text)
    return out / name
