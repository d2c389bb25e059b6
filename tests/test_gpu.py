"""The CUDA path: a TaskWorker-style task in bf16 on the GPU (skipped where no CUDA device exists)."""
import pytest
import torch

from imlca.config import load_config
from imlca.engine.runner import TaskRunner

from conftest import TINY, tiny_overrides

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def test_task_trains_in_bf16_on_cuda():
    cfg = load_config(TINY, tiny_overrides(**{"train.device": "cuda", "train.precision": "bf16"}))
    runner = TaskRunner(cfg)
    out = runner.train(0, runner.theta0())
    assert next(runner.model.parameters()).is_cuda
    assert all(v.device.type == "cpu" and torch.isfinite(v).all() for v in out.adapter.values())
    assert out.losses[-1] < out.losses[0]
    rows = runner.evaluate(0, out.adapter, {"im": [out.head]})
    assert rows["test"]["im"][0] > 50
