"""Inputs the `imlca plan` tests share: a sweep file over sweeps/tiny.yaml and round measured figures for it."""
from __future__ import annotations

from pathlib import Path

import yaml

from imlca.config.sweep import load_sweep
from imlca.planning.figures import Device, Figures, model_key
from imlca.planning.workload import workload

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "sweeps" / "tiny.yaml"
GIB = 2**30


def write_sweep(tmp_path: Path, name: str = "s", **fields) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"base": str(TINY), **fields}))
    return path


def tiny_figures(tmp_path: Path, threads: int = 1, device: str = "cpu", concurrent: int = 1) -> Figures:
    """Round figures for the tiny config: 80 images/s training, 160 features/s, alignment 0.5 s a batch."""
    figures = Figures(tmp_path / "probes.json")
    sweep = load_sweep(write_sweep(tmp_path, "figs"))
    cfg = workload(sweep).trials[0].cfg
    where = Device(device, threads, concurrent)
    figures.put("models", model_key(cfg, where), {"train_img_s": 80.0, "feature_img_s": 160.0, "build_s": 2.0,
                                                   "dim": 32})
    figures.put("align", f"32|32|{where.slot()}", {"samples_per_class": 32, "cholesky_s": 0.5, "draw_s_per_class": 0.25,
                                              "per_batch_s": {"2": 0.5, "6": 0.5}})
    figures.put("fixed", "local", {"imports_s": 1.0, "ray_init_s": 2.0, "first_trial_s": 3.0, "fit_end_s": 0.5,
                                   "shutdown_s": 0.5, "worker_imports_s": 4.0, "plain_trial_imports_s": 1.0,
                                   "cached_trial_imports_s": 6.0})
    return figures
