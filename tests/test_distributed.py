"""The Ray path gives the in-process numbers; actors are retried, not trusted."""
import torch

from imlca.config import load_config
from imlca.orchestration.ray_step import run_distributed

from conftest import TINY, tiny_family_overrides, tiny_overrides


def test_distributed_equals_in_process(ray_cluster, family_run, tmp_path):
    family, local = family_run  # run_protocol of the same config, in this process
    remote = run_distributed(load_config(TINY, tiny_family_overrides(family)), checkpoint_dir=tmp_path)
    assert remote.acc == local.acc
    assert [r["avg_acc"] for r in remote.reports] == [r["avg_acc"] for r in local.reports]
    assert [r["avg_acc_weighted"] for r in remote.reports] == [r["avg_acc_weighted"] for r in local.reports]
    for key, value in local.merged.items():
        torch.testing.assert_close(remote.merged[key], value, rtol=0, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task-000", "task-001", "task-002"]


def test_the_next_task_trains_behind_the_evaluation_with_the_numbers_of_a_call_after_the_save(ray_cluster, tmp_path):
    """`RayStep.run_task(t)` queues task t+1's training from task t's merge right behind its evaluation, before
    the record and the checkpoint; what it trains is bit for bit what a call after the save (from the CentralActor's
    merged adapter) trains, and the next `run_task` uses it instead of training again."""
    import ray

    from imlca.orchestration.ray_step import RayStep
    from imlca.orchestration.wire import output_from_wire

    step = RayStep(load_config(TINY, tiny_overrides()), tmp_path)
    try:
        step.run_task(0)
        assert list(step.ahead) == [1]  # queued before the save
        step.save(0)
        early = output_from_wire(ray.get(step.ahead[1]))
        late = output_from_wire(ray.get(step.worker.train.remote(1, step.central.train_input.remote())))
        assert early.adapter.keys() == late.adapter.keys() and early.losses == late.losses
        for key, value in late.adapter.items():
            assert torch.equal(early.adapter[key], value)
        assert torch.equal(early.head, late.head)
        assert all(torch.equal(early.statistics[k], v) for k, v in late.statistics.items())
        step.run_task(1)
        assert list(step.ahead) == [2]  # task 1's entry taken, task 2's queued
        step.save(1)
        step.run_task(2)
        step.save(2)
        assert step.ahead == {}  # nothing after the last task
    finally:
        step.close()


def test_the_merge_actor_writes_a_tasks_checkpoint_tensors_before_its_save(ray_cluster, tmp_path):
    """A task's tensors are final once it is integrated: the CentralActor's writer thread writes them then, while the
    task is evaluated (a temporary folder appears before `save`, and a dead writer's one for the same task goes);
    `save` completes it into a checkpoint that loads, checksum and config fingerprint verified, holding the run's
    accuracies and merged adapter."""
    import time

    import ray

    from imlca.config import fingerprint
    from imlca.engine.checkpoint import load_checkpoint
    from imlca.orchestration.ray_step import RayStep

    cfg = load_config(TINY, tiny_overrides())
    stale = tmp_path / ".tmp-task-000-1" / "state.safetensors"  # a CentralActor killed while writing task 0
    stale.parent.mkdir()
    stale.write_bytes(b"partial")
    step = RayStep(cfg, tmp_path)
    try:
        step.run_task(0)
        ours = tmp_path / f".tmp-task-000-{ray.get(step.central.pid.remote())}" / "state.safetensors"
        deadline = time.monotonic() + 60
        while not ours.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ours.exists(), "no tensors written before the save"
        assert not (tmp_path / "task-000").exists()
        step.save(0)
        assert [p.name for p in tmp_path.iterdir()] == ["task-000"]  # ours became the checkpoint, the stale one went
        tensors, meta = load_checkpoint(tmp_path / "task-000", fingerprint(cfg))
        snapshot = ray.get(step.central.snapshot.remote())
        assert meta["task"] == 0 and meta["acc"] == snapshot["acc"]
        for key, value in snapshot["merged"].items():
            assert torch.equal(tensors[f"merged.{key}"], torch.tensor(value))
    finally:
        step.close()
