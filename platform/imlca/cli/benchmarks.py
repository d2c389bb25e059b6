"""`imlca benchmarks`: the registered benchmarks (installed plugins' included) and their task splits."""
from __future__ import annotations

import argparse
import json

HELP = "list the registered benchmarks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, num_classes, task_sizes}")


def execute(args: argparse.Namespace) -> int:
    from imlca.data.catalog import describe_benchmarks
    from imlca.plugins import load_entry_points

    load_entry_points()  # installed plugins' benchmarks are listed too
    rows = describe_benchmarks()
    if args.json:
        print(json.dumps([{k: r[k] for k in ("name", "num_classes", "task_sizes")} for r in rows]))
        return 0
    for r in rows:
        sizes = " + ".join(str(s) for s in r["task_sizes"]) or "from data.task_sizes"
        print(f"{r['name']:17s} {r['num_classes'] or '-':>4} classes  tasks: {sizes:22s} {r['description']}")
    return 0
