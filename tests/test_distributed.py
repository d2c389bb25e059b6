"""The Ray path gives the in-process numbers; actors are retried, not trusted."""
import torch

from imlca.config import load_config
from imlca.engine.protocol import run_protocol
from imlca.orchestration.ray_step import run_distributed

from conftest import TINY, tiny_overrides


def test_distributed_equals_in_process(ray_cluster, tmp_path):
    cfg = load_config(TINY, tiny_overrides())
    local = run_protocol(cfg)
    remote = run_distributed(cfg, checkpoint_dir=tmp_path)
    assert remote.acc == local.acc
    assert [r["avg_acc"] for r in remote.reports] == [r["avg_acc"] for r in local.reports]
    for key, value in local.merged.items():
        torch.testing.assert_close(remote.merged[key], value, rtol=0, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task-000", "task-001", "task-002"]
