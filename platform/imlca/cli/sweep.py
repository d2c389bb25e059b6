"""`imlca sweep SWEEP.yaml`: a Ray Tune sweep, tracked in MLflow."""
from __future__ import annotations

import argparse

HELP = "run a Ray Tune sweep, tracked in MLflow"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep YAML, e.g. sweeps/embedded.yaml, or a bundled name such as embedded.yaml")
    p.add_argument("--resume", action="store_true", help="continue the newest interrupted run of this sweep")


def execute(args: argparse.Namespace) -> int:
    from imlca.config.sweep import load_sweep

    sweep = load_sweep(args.sweep)
    from imlca.orchestration.launch import launch_sweep

    return launch_sweep(sweep, args.resume)
