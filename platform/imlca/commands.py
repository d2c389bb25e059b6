"""`report` and `bench`: the commands that read what runs left behind, or measure the platform."""
from __future__ import annotations

import argparse

from imlca.cli import command


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", default="imlca", help="MLflow experiment name (default: imlca)")
    p.add_argument("--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--parent", help="only the trials of this sweep's parent run id")
    p.add_argument("--paper", action="store_true", help="Table-1 shape beside the paper's numbers")


@command("report", "summarise tracked runs: Ā, last accuracy, forgetting (mean ± std over seeds)", _report_args)
def cmd_report(args: argparse.Namespace) -> int:
    from imlca.tracking.report import collect, format_paper, format_table
    from imlca.tracking.store import Tracker, check_reachable, resolve_uri

    uri = resolve_uri(args.uri)
    check_reachable(uri)
    table = collect(Tracker(uri, args.experiment), args.parent)
    if not table:
        print(f"no finished runs in experiment '{args.experiment}' at {uri}")
        return 0
    for line in (format_paper(table) if args.paper else format_table(table)):
        print(line)
    return 0


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this benchmark (repeatable): lora_worker, merge, bank, handoff, sweep, gpu")
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (seconds, for tests)")
    p.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in this process = CPUs of the TaskWorker it is compared with (default: 1)")
    p.add_argument("--strict", action="store_true", help="exit with 1 when a goal is missed")


@command("bench", "measure the DESIGN §6 performance targets as ratios in one run", _bench_args)
def cmd_bench(args: argparse.Namespace) -> int:
    from imlca.bench.measure import Settings
    from imlca.bench.table import check_output, run_benchmarks, select
    from imlca.errors import UserError

    if args.threads < 1:
        raise UserError(f"--threads must be >= 1 (got {args.threads})")
    names, json_path = select(args.only), check_output(args.json)
    results = run_benchmarks(names, Settings(args.quick, args.threads), json_path)
    if any(r.error for r in results):
        return 1
    return 1 if args.strict and any(r.passed is False for r in results) else 0
