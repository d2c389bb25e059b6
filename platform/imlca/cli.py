"""`python -m imlca run|sweep|report|bench|benchmarks ...`. Bad input: one line on stderr, exit code 2."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

from imlca.errors import UserError

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] = {}


def command(name: str, help_text: str, setup: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register `fn(args) -> exit code` under `name`; `setup(parser)` adds its arguments."""
    def register(fn: Command) -> Command:
        COMMANDS[name] = (help_text, setup, fn)
        return fn
    return register


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML, e.g. sweeps/default.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set align.lam=0.2 (repeatable)")
    p.add_argument("--out", help="output folder (default: <output_dir>/<name>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last task checkpoint")
    p.add_argument("--distributed", action="store_true", help="run on Ray (TaskWorker + MergeActor)")
    p.add_argument("--track", action="store_true", help="log the run to MLflow")


def _output_dir(args: argparse.Namespace, cfg) -> Path:
    if args.resume and not args.out:
        raise UserError("--resume needs --out DIR, the folder of the run to continue")
    if args.out:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()) and not args.resume:
            raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        return out
    return Path(cfg.output_dir) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


@command("run", "run one experiment (in this process, or on Ray with --distributed)", _run_args)
def cmd_run(args: argparse.Namespace) -> int:
    from imlca.config import load_config

    cfg = load_config(args.config, args.overrides)  # before the heavy imports: bad input fails in a second
    out = _output_dir(args, cfg)
    from imlca.engine.runner import preflight

    preflight(cfg)
    if args.resume:
        from imlca.engine.protocol import check_resumable

        check_resumable(cfg, out / "checkpoints")
    tracked = None
    if args.track:
        from imlca.tracking.runs import TrackedRun

        tracked = TrackedRun(cfg)
    from imlca.engine.protocol import print_summary, run_protocol, task_printer, write_outputs

    print(f"run {cfg.name}: {cfg.data.benchmark}, {cfg.model.backbone}, merge {cfg.merge.rule}/{cfg.merge.space}, "
          f"methods {', '.join(cfg.align.methods)}, seed {cfg.seed} -> {out}", flush=True)
    printer = task_printer(cfg.align.methods)

    def on_task(report: dict) -> None:
        printer(report)
        if tracked is not None:
            tracked.on_task(report)

    if args.distributed:
        from imlca.orchestration.driver import run_distributed as execute
    else:
        execute = run_protocol
    try:
        result = execute(cfg, on_task=on_task, checkpoint_dir=out / "checkpoints")
    except BaseException:
        if tracked is not None:
            tracked.finish(None, "FAILED")
        raise
    print_summary(result)
    write_outputs(out, cfg, result)
    if tracked is not None:
        tracked.finish(lambda d: write_outputs(d, cfg, result))
    print(f"wrote {out}: config.yaml, results.json, accuracy_<method>.csv, adapter/heads .safetensors")
    return 0


def _sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep YAML, e.g. sweeps/embedded.yaml")
    p.add_argument("--resume", action="store_true", help="continue the newest interrupted run of this sweep")


@command("sweep", "run a Ray Tune sweep, tracked in MLflow", _sweep_args)
def cmd_sweep(args: argparse.Namespace) -> int:
    from imlca.sweep_config import load_sweep

    sweep = load_sweep(args.sweep)
    from imlca.orchestration.launch import launch_sweep

    return launch_sweep(sweep, args.resume)


def _benchmarks_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, num_classes, task_sizes}")


@command("benchmarks", "list the registered benchmarks", _benchmarks_args)
def cmd_benchmarks(args: argparse.Namespace) -> int:
    from imlca.data.catalog import describe_benchmarks

    rows = describe_benchmarks()
    if args.json:
        print(json.dumps([{k: r[k] for k in ("name", "num_classes", "task_sizes")} for r in rows]))
        return 0
    for r in rows:
        sizes = " + ".join(str(s) for s in r["task_sizes"]) or "from data.task_sizes"
        print(f"{r['name']:17s} {r['num_classes'] or '-':>4} classes  tasks: {sizes:22s} {r['description']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imlca", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, setup, _) in COMMANDS.items():
        setup(sub.add_parser(name, help=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    from imlca import commands  # noqa: F401  (registers report and bench)

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
