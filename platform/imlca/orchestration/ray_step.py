"""`RayStep`: the protocol's tasks on a TaskWorker and a MergeActor; tensors flow actor to actor as object refs.

`run_distributed` is `engine.protocol.run_protocol` with this step: the same loop, the same seeds, hence the same
numbers as the in-process run by construction. A killed TaskWorker is restarted by Ray and its call re-run; a
killed MergeActor restarts from its last checkpoint and the task it lacks is run again (every step is
deterministic, and a merge is applied once per task id).
"""
from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import ray
from ray.exceptions import RayActorError, RayTaskError

from imlca.config import ExperimentConfig, to_dict
from imlca.engine.protocol import Callback, Heads, RunResult, Tensors, run_protocol
from imlca.errors import UserError
from imlca.orchestration.actors import LostMergeError, MergeActor, TaskWorker
from imlca.orchestration.cluster import check_gpus, ensure_ray
from imlca.orchestration.wire import heads_to_torch, to_torch

RETRIES = dict(max_restarts=3, max_task_retries=3)  # a killed actor is restarted and its call re-run


def _same_node_strategy():
    """Keep the MergeActor beside this driver: its checkpoint folder is on this node's disk."""
    from ray.util.placement_group import get_current_placement_group
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

    group = get_current_placement_group()
    if group is not None:  # inside a Tune trial: bundle 0 is the trial's own (PACK puts it on the trial's node)
        return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def raise_application_error(err: Exception) -> None:
    """Errors raised by our code inside an actor surface as themselves; only lost actors are retried."""
    cause = getattr(err, "cause", None)
    if isinstance(err, RayTaskError) and not isinstance(cause, LostMergeError):
        raise cause if isinstance(cause, UserError) else err


class RayStep:
    def __init__(self, cfg: ExperimentConfig, checkpoint_dir: Path | None):
        ensure_ray()
        check_gpus(cfg)
        self.scratch = None
        if checkpoint_dir is None:  # the MergeActor always checkpoints: a restart must find its state
            checkpoint_dir = self.scratch = Path(tempfile.mkdtemp(prefix="imlca-run-"))
        tree, r = to_dict(cfg), cfg.resources
        self.worker = TaskWorker.options(num_cpus=r.num_cpus, num_gpus=r.num_gpus,
                                         memory=r.ray_resources().get("memory"), **RETRIES).remote(
            tree, max(1, math.floor(r.num_cpus)))
        theta0, dim, self.num_tasks = ray.get(self.worker.setup.remote())
        self.merger = MergeActor.options(num_cpus=0, scheduling_strategy=_same_node_strategy(), **RETRIES).remote(
            tree, theta0, dim, str(checkpoint_dir))
        self.state_ref = None  # (merged, heads) after the latest merge, as an object ref

    def resume(self) -> list[dict]:
        done = ray.get(self.merger.tasks_done.remote())
        return [ray.get(self.merger.report.remote(t)) for t in range(done)]

    def _task(self, task: int) -> dict:
        """Train → merge + align → evaluate → record, actor to actor. Only the report reaches the driver."""
        self.state_ref = self.merger.integrate.remote(self.worker.train.remote(task, self.merger.merged.remote()))
        return ray.get(self.merger.record.remote(task, self.worker.evaluate.remote(task, self.state_ref)))

    def _retrying(self, task: int, call):
        """`call()`, again after a lost actor: Ray restarts it (a MergeActor from its last checkpoint)."""
        for attempt in range(RETRIES["max_restarts"] + 1):
            try:
                return call()
            except (RayActorError, RayTaskError) as err:
                raise_application_error(err)
                if attempt == RETRIES["max_restarts"]:
                    raise
                print(f"task {task}: {err.__class__.__name__}; running it again from the merge state", flush=True)
        raise AssertionError("unreachable")

    def run_task(self, task: int) -> dict:
        return self._retrying(task, lambda: self._task(task))

    def _save(self, task: int) -> None:
        if ray.get(self.merger.tasks_done.remote()) <= task:  # a restarted MergeActor lacks this task: redo it
            self._task(task)
        ray.get(self.merger.save.remote(task))

    def robustness(self) -> dict[str, float]:
        return ray.get(self.worker.robustness.remote(self.state_ref))

    def save(self, task: int) -> None:
        self._retrying(task, lambda: self._save(task))

    def final(self) -> tuple[dict[str, list[list[float]]], Tensors, Heads]:
        final = ray.get(self.merger.snapshot.remote())
        return final["acc"], to_torch(final["merged"]), heads_to_torch(final["heads"])

    def close(self) -> None:
        for actor in (self.worker, self.merger):
            ray.kill(actor)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def run_distributed(cfg: ExperimentConfig, on_task: Callback | None = None,
                    checkpoint_dir: Path | None = None) -> RunResult:
    """The protocol on Ray; with `checkpoint_dir`, saves after every task and resumes from the latest checkpoint."""
    return run_protocol(cfg, on_task, checkpoint_dir, step=RayStep)
