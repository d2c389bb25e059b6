"""`imlca run CONFIG`: one experiment, in this process or on Ray (`--distributed`), optionally tracked."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from imlca.errors import UserError

HELP = "run one experiment (in this process, or on Ray with --distributed)"


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def execute(args: argparse.Namespace) -> int:
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
        from imlca.orchestration.driver import run_distributed as run_fn
    else:
        run_fn = run_protocol
    try:
        result = run_fn(cfg, on_task=on_task, checkpoint_dir=out / "checkpoints")
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
