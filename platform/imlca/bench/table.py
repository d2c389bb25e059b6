"""Run the selected benchmarks one after another, print each row as it finishes, keep the JSON file current.

A row's first line: its name, the median of its repeats, their spread (lowest–highest, and how many), the goal,
the verdict (measure.verdict: met / missed / not resolved; "-" when nothing was judged) and what it divides."""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from imlca.bench import BENCHMARKS
from imlca.bench.measure import MET, MISSED, NOT_RESOLVED, Measurement, Result, Settings, format_value
from imlca.errors import UserError

HEADER = f"{'benchmark':13s} {'median':>8s}  {'spread (repeats)':22s} {'goal':10s} {'verdict':12s} what"


def select(only: list[str] | None) -> list[str]:
    from imlca.config.loading import did_you_mean

    rows = ", ".join(BENCHMARKS)
    if "" in (only or []):
        raise UserError(f"--only needs a row name; the rows: {rows}")
    unknown = [name for name in only or [] if name not in BENCHMARKS]
    if unknown:
        raise UserError(f"unknown bench row '{unknown[0]}';{did_you_mean(unknown[0], BENCHMARKS)} the rows: {rows}")
    return list(dict.fromkeys(only)) if only else list(BENCHMARKS)


def check_output(path: str | None) -> Path | None:
    if path is None:
        return None
    out = Path(path)
    if not out.parent.is_dir():
        raise UserError(f"--json {path}: folder {out.parent} does not exist; create it or choose another path")
    return out


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    return f"{value * 1e3:.2f} ms" if value >= 1e-3 else f"{value * 1e6:.0f} µs"


def _value(value: float | None, unit: str) -> str:
    return "-" if value is None else format_value(value, unit)


def _spread(m: Measurement, unit: str) -> str:
    if m.spread is None:
        return "-"
    low, high = m.spread
    return f"{format_value(low, unit)}–{format_value(high, unit)} ({len(m.samples)})"


def format_result(result: Result) -> list[str]:
    m, goal = result.measurement, result.goal
    lines = [f"{result.name:13s} {_value(m.ratio, goal.unit):>8s}  {_spread(m, goal.unit):22s} {goal.describe():10s} "
             f"{result.verdict or '-':12s} {goal.text}"]
    pad = " " * 14
    if result.error or m.skipped:
        lines.append(f"{pad}{'error: ' + result.error if result.error else 'skipped: ' + m.skipped}")
    if m.note:
        lines.append(pad + m.note)
    if m.timings:
        lines.append(pad + "times: " + ", ".join(f"{k} {_seconds(v)}" for k, v in m.timings.items()))
    notes = [f"{k} {_value(v, goal.unit)}" for k, v in m.ratios.items()]
    notes += [f"{k} {'ok' if ok else 'WRONG'}" for k, ok in m.checks.items()]
    if notes:
        lines.append(pad + "ratios/checks: " + ", ".join(notes))
    return lines + [f"{pad}({result.wall_s:.1f} s)"]


def run_one(name: str, settings: Settings) -> Result:
    bench = BENCHMARKS[name]
    start = time.perf_counter()
    try:
        measurement, error = bench.load()(settings), None
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 — one crashed benchmark must not lose the others' numbers
        traceback.print_exc()
        measurement, error = Measurement([]), f"{err.__class__.__name__}: {err}"
    return Result(name, bench.goal, measurement, time.perf_counter() - start, error)


def write_json(path: Path, settings: Settings, results: list[Result], wall_s: float) -> None:
    doc = {"settings": {"quick": settings.quick, "threads": settings.threads},
           "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "torch": torch.__version__,
                       "cuda": torch.cuda.is_available()},
           "wall_s": wall_s, "results": [r.to_json() for r in results]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(path)


def _print(line: str) -> None:
    print(line, flush=True)  # rows appear as benchmarks finish, also when stdout is a pipe


def run_benchmarks(names: list[str], settings: Settings, json_path: Path | None,
                   show: Callable[[str], None] = _print) -> list[Result]:
    """Each benchmark in turn; its rows are printed (and the JSON rewritten) as soon as it finishes."""
    start = time.perf_counter()
    torch.set_num_threads(settings.threads)
    show(f"imlca bench ({'quick' if settings.quick else 'full'}, {settings.threads} torch thread(s), "
         f"{os.cpu_count()} CPUs): median and spread of alternating rounds; a goal inside the spread is not resolved")
    show(HEADER)
    results: list[Result] = []
    try:
        for name in names:
            results.append(run_one(name, settings))
            for line in format_result(results[-1]):
                show(line)
            if json_path is not None:
                write_json(json_path, settings, results, time.perf_counter() - start)
    finally:
        if "ray" in sys.modules:  # only when a benchmark used Ray: importing the driver imports Ray
            from imlca.orchestration.cluster import shutdown_ray

            shutdown_ray()
    verdicts = [r.verdict for r in results]
    show(f"{verdicts.count(MET)} of {len(results)} goals met, {verdicts.count(MISSED)} missed, "
         f"{verdicts.count(NOT_RESOLVED)} not resolved, {verdicts.count(None)} not judged; "
         f"wall time {time.perf_counter() - start:.1f} s")
    return results
