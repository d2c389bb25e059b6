"""`imlca predict RUN IMAGE...`: the class names an exported model gives images."""
from __future__ import annotations

import argparse
from pathlib import Path

from imlca.errors import UserError

HELP = "name the classes of images with a trained run's exported model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run's output folder (or its model/ folder) or an MLflow run id")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--uri", help="tracking URI for a run id (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")


def execute(args: argparse.Namespace) -> int:
    missing = [i for i in args.images if not Path(i).is_file()]
    if missing:
        raise UserError(f"image {missing[0]} not found; give paths of existing image files")
    from imlca.cli.notebook import load

    model = load(args.run, args.uri)
    for image, name in zip(args.images, model.predict(args.images)):
        print(f"{image}\t{name}")
    return 0
