"""`imlca run CONFIG`: one experiment, in this process or on Ray (`--distributed`), optionally tracked."""
from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

from imlca.errors import UserError

HELP = "run one experiment (in this process, or on Ray with --distributed)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML, e.g. sweeps/default.yaml, or a bundled name such as tiny.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set align.lam=0.2 (repeatable)")
    p.add_argument("--out", help="output folder (default: <output_dir>/<name>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last task checkpoint")
    p.add_argument("--distributed", action="store_true", help="run on Ray (TaskWorker + CentralActor)")
    p.add_argument("--track", action="store_true", help="log the run to MLflow")


def _output_dir(args: argparse.Namespace) -> Path | None:
    """--out, checked; None for the default folder, claimed once the run's input has been checked."""
    if args.resume and not args.out:
        raise UserError("--resume needs --out DIR, the folder of the run to continue")
    if args.out:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()) and not args.resume:
            raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        return out
    return None


def default_folder(cfg) -> tuple[Path, str]:
    """(parent, name) of a run's default folder: `<output_dir>/<name>-<time>`."""
    return Path(cfg.output_dir), f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def claim_folder(parent: Path, stem: str) -> Path:
    """`parent/stem`, or `stem-2`, `stem-3`, ... when taken: made here (mkdir fails on an existing folder), so two
    runs started in the same second never share one."""
    parent.mkdir(parents=True, exist_ok=True)
    folder, n = parent / stem, 1
    while True:
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            n += 1
            folder = parent / f"{stem}-{n}"


def _num_tasks(cfg) -> int:
    from imlca.data import load_benchmark

    return load_benchmark(cfg.data, cfg.seed).split.num_tasks


def execute(args: argparse.Namespace) -> int:
    from imlca.config import load_config

    cfg = load_config(args.config, args.overrides)  # before the heavy imports: bad input fails in a second
    out = _output_dir(args)
    from imlca.engine.runner import preflight

    preflight(cfg)
    if args.resume:
        from imlca.engine.protocol import check_resumable

        check_resumable(cfg, out / "checkpoints")
    tracked = None
    if args.track:
        from imlca.tracking.runs import TrackedRun

        tracked = TrackedRun(cfg)
    if out is None:
        out = claim_folder(*default_folder(cfg))
    from imlca.engine.artifacts import write_run
    from imlca.engine.protocol import LocalStep, run_protocol

    print(f"run {cfg.name}: {cfg.data.benchmark}, {cfg.model.backbone}, merge {cfg.merge.rule}/{cfg.merge.space}, "
          f"methods {', '.join(cfg.align.methods)}, seed {cfg.seed} -> {out}", flush=True)
    printer = task_printer(cfg.align.methods)
    from imlca.cli.progress import RunProgress, task_summary

    progress = RunProgress(_num_tasks(cfg), cfg.train.epochs)

    def on_task(report: dict) -> None:
        with progress.bar.external_write_mode():
            printer(report)
            print(task_summary(report, cfg.align.methods), flush=True)
        if tracked is not None:
            tracked.on_task(report)

    def on_epoch(task: int, epoch: int, loss: float) -> None:
        progress.epoch(task, epoch, loss)
        if tracked is not None:
            tracked.on_epoch(task, epoch, loss, cfg.train.epochs)

    step = partial(LocalStep, on_epoch=on_epoch)
    if args.distributed:
        from imlca.orchestration.ray_step import RayStep as step
    try:
        result = run_protocol(cfg, on_task=on_task, checkpoint_dir=out / "checkpoints", step=step)
    except BaseException:
        if tracked is not None:
            tracked.finish(None, "FAILED")
        raise
    finally:
        progress.close()
    print_summary(result)
    from imlca.engine.export import export_run_folder

    def write(folder: Path) -> None:
        write_run(folder, cfg, result)
        export_run_folder(folder, cfg)

    write(out)
    if tracked is not None:
        tracked.finish(write)
    from imlca.engine.export import NOT_EXPORTED

    model = "no model/ (its prediction takes one backbone pass per adapter set)" \
        if cfg.align.family in NOT_EXPORTED else \
        (f"model/ ({'backbone' if cfg.align.family == 'slca' else 'peft adapter'}, head, class names: "
         f"imlca predict {out} IMAGE)")
    print(f"wrote {out}: config.yaml, results.json, accuracy_<method>.csv, adapter/heads .safetensors, {model}")
    return 0


def format_row(method: str, task: int, row: list[float]) -> str:
    cells = " ".join(f"{v:6.2f}" for v in row)
    return f"task {task} {method:7s} A_t={sum(row) / len(row):6.2f} | {cells}"


def task_printer(methods: list[str]):
    """Prints every method's accuracy row of a task report."""
    def show(report: dict) -> None:
        task = report["task"]
        for method in methods:
            row = [report[f"{method}/acc_{j}"] for j in range(task + 1)]
            print(format_row(method, task, row), flush=True)
    return show


def print_summary(result) -> None:
    for method in result.methods:
        s = result.summary[method]
        print(f"{method:7s} avg_acc(Ā)={s['avg_acc']:.2f} last_acc={s['last_acc']:.2f} "
              f"forgetting={s['forgetting']:.2f}")
    print(f"wall time {result.seconds:.1f} s")
