"""`imlca bench`: the performance goals as measured ratios, in one run, each with its spread and verdict."""
from __future__ import annotations

import argparse

HELP = ("measure the performance goals in one run: per row the median and spread of its repeats and a "
        "verdict (met, missed, or not resolved when the spread straddles the goal)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this benchmark (repeatable); the rows are listed on the docs' Measurements page")
    p.add_argument("--gpu", action="store_true",
                   help="the GPU data paths alone (gpu_paths: synthetic, cached, JPEG); no Ray or MLflow needed")
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes and fewer repeats (about 6 minutes on 2 CPU cores)")
    p.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in this process = CPUs of the TaskWorker it is compared with = the cores "
                        "end_to_end pins both of its sides to (default: 1)")
    p.add_argument("--strict", action="store_true", help="exit with 1 when a goal is missed (not when unresolved)")


def execute(args: argparse.Namespace) -> int:
    from imlca.bench.measure import MISSED, Settings
    from imlca.bench.table import check_output, run_benchmarks, select
    from imlca.errors import UserError

    if args.threads < 1:
        raise UserError(f"--threads must be >= 1 (got {args.threads})")
    if args.gpu and args.only:
        raise UserError("--gpu runs gpu_paths alone; drop --only, or use --only gpu_paths")
    names, json_path = select(["gpu_paths"] if args.gpu else args.only), check_output(args.json)
    results = run_benchmarks(names, Settings(args.quick, args.threads, args.gpu), json_path)
    if any(r.error for r in results):
        return 1
    return 1 if args.strict and any(r.verdict == MISSED for r in results) else 0
