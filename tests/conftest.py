"""Shared fixtures: tiny configs, and one small local Ray cluster for the whole session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


def tiny_overrides(**extra) -> list[str]:
    """A run of seconds: 6 synthetic classes in 3 tasks, a two-block ViT at 16 px, one epoch."""
    values = {
        "data.benchmark": "synthetic", "data.image_size": 16, "data.crop_scale_min": 0.8, "data.hflip": False,
        "model.backbone": "vit_test_tiny", "model.pretrained": False, "lora.rank": 4, "lora.alpha": 8,
        "train.epochs": 4, "train.batch_size": 16, "train.lr": 0.04, "align.samples_per_class": 32,
        "align.epochs": 3, "align.batch_size": 32, "align.compare": "[im, im_ca]", "output_dir": "outputs",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture
def tiny_cfg():
    from imlca.config import load_config

    return load_config(None, tiny_overrides())


@pytest.fixture(scope="session")
def ray_cluster():
    """One small local Ray cluster shared by every Ray test of the session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
