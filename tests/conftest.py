"""Shared fixtures: tiny configs, and one small local Ray cluster for the whole session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


TINY = REPO / "sweeps" / "tiny.yaml"  # a run of seconds: 6 synthetic classes in 3 tasks, a two-block ViT at 16 px


def tiny_overrides(**extra) -> list[str]:
    """`--set` strings for changes to sweeps/tiny.yaml (load with `load_config(TINY, tiny_overrides(...))`)."""
    return [f"{k}={v}" for k, v in extra.items()]


@pytest.fixture(scope="session")
def ray_cluster():
    """One small local Ray cluster shared by every Ray test of the session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
