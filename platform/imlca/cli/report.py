"""`imlca report`: summarise tracked runs (Ā, last accuracy, forgetting; mean ± std over seeds), as a table on the
terminal or as a report file with figures (`--format md|csv|latex|html --out DIR`)."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

HELP = "summarise tracked runs: Ā, last accuracy, forgetting (mean ± std over seeds); --format html for a page"
FORMAT_CHOICES = ("md", "csv", "latex", "html")
OBJECT_STORES = ("s3://", "gs://")  # `--uri` there: a sweep's copy of its sqlite store (orchestration/storage.py)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", default="imlca", help="MLflow experiment name (default: imlca)")
    p.add_argument("--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db), or the "
                   "copy of a sqlite store that a sweep kept in its bucket (s3://.../mlflow.db)")
    p.add_argument("--parent", help="only the trials of this sweep's parent run id")
    p.add_argument("--paper", action="store_true", help="Table-1 shape beside the paper's numbers")
    p.add_argument("--format", choices=FORMAT_CHOICES,
                   help="write report.{md,csv,tex,html} (with figures) to --out instead of printing the table")
    p.add_argument("--out", default=".", help="folder for --format's files (default: the current folder)")
    p.add_argument("--select", metavar="KEY", help="runs that differ in config KEY (e.g. align.lam): choose its "
                   "value on validation Ā, show the chosen value's test numbers")


def readable_uri(uri: str, folder: Path) -> str:
    """A sqlite copy in a bucket (s3://, gs://) is downloaded into `folder` and read from there."""
    if not uri.startswith(OBJECT_STORES):
        return uri
    from imlca.errors import UserError
    from imlca.orchestration.storage import download_file

    local = folder / "mlflow.db"
    try:
        found = download_file(uri, local)
    except OSError as err:
        raise UserError(f"cannot read {uri} ({str(err).splitlines()[0]}); check the bucket's name and this "
                        "machine's credentials for it") from None
    if not found:
        raise UserError(f"no tracking store at {uri}; give the mlflow.db that a sweep copied to its bucket (the sweep "
                        "prints its URI at the end: <storage_path>/<sweep>-<time>/mlflow.db)")
    return f"sqlite:///{local}"


def execute(args: argparse.Namespace) -> int:
    from imlca.tracking.database import with_driver
    from imlca.tracking.store import resolve_uri

    if args.select:
        check_config_key(args.select)
    with tempfile.TemporaryDirectory(prefix="imlca-report-") as folder:
        uri = resolve_uri(None) if args.uri is None else with_driver(args.uri)  # --uri wins over the environment
        return report(args, readable_uri(uri, Path(folder)))


def report(args: argparse.Namespace, uri: str) -> int:
    from imlca.errors import without_passwords
    from imlca.tracking.report import format_paper, format_table, records, table_of
    from imlca.tracking.store import Tracker, check_reachable

    check_reachable(uri)
    if args.select:
        from imlca.tracking.selection import collect_values, format_selection

        by_value = collect_values(Tracker(uri, args.experiment), args.select, args.parent)
        print("\n".join(format_selection(by_value, args.select)) if by_value else
              f"no finished runs with validation metrics and a '{args.select}' param in '{args.experiment}'")
        return 0
    found = records(Tracker(uri, args.experiment), args.parent)
    table = table_of(found)
    if not table:
        print(f"no finished runs in experiment '{args.experiment}' at {without_passwords(uri)}")
        return 0
    if args.format:
        from imlca.tracking.report_pages import write_report

        path = write_report(args.out, args.format, f"imlca report: experiment {args.experiment}", found)
        print(f"wrote {path}")
        return 0
    for line in (format_paper(table) if args.paper else format_table(table)):
        print(line)
    if args.paper and paper_hint(table, args.experiment):
        print(paper_hint(table, args.experiment))
    return 0


def check_config_key(key: str) -> None:
    """`--select` names a config key (runs log every key as a param): a typo is refused, not 'no runs'."""
    from imlca.config import ExperimentConfig, flatten
    from imlca.config.loading import did_you_mean
    from imlca.errors import UserError

    keys = flatten(ExperimentConfig())
    if key not in keys:
        hint = did_you_mean(key, keys) or " give a dotted key such as align.lam"
        raise UserError(f"--select {key}: not a config key;{hint}")


def paper_hint(table: dict, experiment: str) -> str:
    """What `--paper` compared: the benchmarks of the paper's table this experiment holds, else where to look."""
    from imlca.tracking.paper_results import BENCHMARKS

    ours = sorted({benchmark for benchmark, _, _ in table})
    if any(benchmark in BENCHMARKS for benchmark in ours):
        return ""
    return (f"experiment '{experiment}' holds runs of {', '.join(ours)}, none of the paper's benchmarks; the paper "
            f"sweeps (sweeps/paper/) track into another: --experiment imlca-paper")
