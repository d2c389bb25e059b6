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


def test_the_next_task_trains_while_the_merger_saves_with_the_numbers_of_a_call_after_the_save(ray_cluster, tmp_path):
    """`RayStep.save(t)` starts task t+1's training from task t's merge before the checkpoint is written; what it
    trains is bit for bit what the call after the save (from the MergeActor's merged adapter) trains, and the
    next `run_task` uses it instead of training again."""
    import ray

    from imlca.orchestration.ray_step import RayStep
    from imlca.orchestration.wire import output_from_wire

    step = RayStep(load_config(TINY, tiny_overrides()), tmp_path)
    try:
        step.run_task(0)
        step.save(0)
        assert list(step.ahead) == [1]
        early = output_from_wire(ray.get(step.ahead[1]))
        late = output_from_wire(ray.get(step.worker.train.remote(1, step.merger.merged.remote())))
        assert early.adapter.keys() == late.adapter.keys() and early.losses == late.losses
        for key, value in late.adapter.items():
            assert torch.equal(early.adapter[key], value)
        assert torch.equal(early.head, late.head)
        assert all(torch.equal(early.statistics[k], v) for k, v in late.statistics.items())
        step.run_task(1)
        assert step.ahead == {}  # used, not trained a third time
        step.save(1)
        step.run_task(2)
        step.save(2)
        assert step.ahead == {}  # nothing after the last task
    finally:
        step.close()
