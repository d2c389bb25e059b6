"""Measured figures the plan needs, in a small JSON cache: throughput per (backbone, image size, precision, device,
threads), alignment speed per (feature dim, batch, threads), and the fixed costs of a sweep on this machine.

`--probe` measures them here (planning/probe.py); `bench --gpu` adds the training throughput of ViT-B/16 on the GPU
it ran on. The plan reads them and never guesses one that is missing. File: `$IMLCA_PLAN_PROBES`, else
`~/.cache/imlca/plan-probes.json`; written to a temporary file and renamed, so a reader never sees half of it.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from imlca.config import ExperimentConfig
from imlca.registries import FAMILIES

ENV = "IMLCA_PLAN_PROBES"
DEFAULT = "~/.cache/imlca/plan-probes.json"
FORMAT = 1


def cache_path() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT).expanduser()


@dataclass(frozen=True)
class Device:
    """Where a trial computes: "cpu" or a CUDA device's name, the torch threads it runs with, and how many trials
    share the machine at once (figures taken with that many probes side by side)."""
    name: str
    threads: int
    concurrent: int = 1

    def slot(self) -> str:
        return f"{self.threads}" if self.concurrent == 1 else f"{self.threads}x{self.concurrent}"

    def key(self) -> str:
        return f"{self.name}|{self.slot()}"


def model_key(cfg: ExperimentConfig, device: Device) -> str:
    """Throughput does not depend on weight values, so `pretrained` is not part of the key."""
    key = f"{cfg.model.backbone}|{cfg.data.image_size}|{cfg.train.precision}|{cfg.train.batch_size}|{device.key()}"
    return key if cfg.align.family == "im" else f"{key}|{cfg.align.family}"  # SLCA trains the whole backbone


def key_family(key: str) -> str:
    """The method family a figure's key was measured for (IM's keys carry none)."""
    last = key.rsplit("|", 1)[-1]
    return last if last in FAMILIES and last != "im" else "im"


def align_key(dim: int, batch: int, device: Device, family: str = "im") -> str:
    key = f"{dim}|{batch}|{device.slot()}"
    return key if family == "im" else f"{key}|{family}"  # SLCA's CA: its own loss and draws


class Figures:
    """The cache's three tables: `models` (train_img_s, feature_img_s, build_s, dim), `align` (cholesky_s,
    draw_s_per_class at samples_per_class, per_batch_s by class count), `fixed` (seconds of the sweep's start-up
    pieces, measured on this machine under the key "local")."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_path()
        self.doc = {"format": FORMAT, "models": {}, "align": {}, "fixed": {}}
        if self.path.is_file():
            try:
                doc = json.loads(self.path.read_text())
                if doc.get("format") == FORMAT:
                    self.doc = doc
            except ValueError:
                pass  # a foreign or torn file: measured again and rewritten

    def get(self, table: str, key: str) -> dict | None:
        return self.doc[table].get(key)

    def put(self, table: str, key: str, values: dict) -> None:
        self.doc[table][key] = {**self.doc[table].get(key, {}), **values, "measured": time.strftime("%Y-%m-%d %H:%M"),
                                "load": os.getloadavg()[0]}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.doc, indent=1, sort_keys=True))
        tmp.replace(self.path)


def record_gpu_training(backbone: str, image_size: int, precision: str, batch: int, device_name: str,
                        train_img_s: float, feature_img_s: float, dim: int) -> None:
    """What `bench --gpu` measured (LoRA training and fp32 features on synthetic batches already on the GPU), for the
    plan of a sweep that trains this model on such a GPU."""
    figures = Figures()
    key = f"{backbone}|{image_size}|{precision}|{batch}|{device_name}|1"
    figures.put("models", key, {"train_img_s": train_img_s, "feature_img_s": feature_img_s, "dim": dim,
                                "source": "bench --gpu (synthetic batches on the GPU)"})
    figures.save()
