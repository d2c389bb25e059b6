"""`RayStep`: the protocol's tasks on a TaskWorker and a CentralActor; tensors flow actor to actor as object refs.

`run_distributed` is `engine.protocol.run_protocol` with this step: the same loop, the same seeds, hence the same
numbers as the in-process run by construction. A killed actor is restarted by Ray, empty: the driver configures it
again (a CentralActor from the run's last checkpoint) and runs the task again (every step is deterministic, and a
merge is applied once per task id); an actor Ray gave up on is replaced by a new one.

With a `WorkerPool` (a sweep's trials: `worker_pool.py`) the actors come from the previous run of this process
and go back to the pool at the end, instead of two new processes per run.
"""
from __future__ import annotations

import math
import shutil
import tempfile
import uuid
from pathlib import Path

import ray
from ray.exceptions import RayActorError, RayTaskError

from imlca.config import ExperimentConfig, to_dict
from imlca.engine.protocol import Callback, Heads, RunResult, Tensors, run_protocol
from imlca.errors import UserError
from imlca.orchestration.actors import LostActorError, CentralActor, TaskWorker
from imlca.orchestration.cluster import check_gpus, ensure_ray
from imlca.orchestration.wire import heads_to_torch, to_torch
from imlca.orchestration.worker_pool import ActorPair, WorkerPool, run_shape

RETRIES = dict(max_restarts=3, max_task_retries=3)  # a killed actor is restarted and its call re-run


def _same_node_strategy():
    """Keep the CentralActor beside this driver: its checkpoint folder is on this node's disk."""
    from ray.util.placement_group import get_current_placement_group
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

    group = get_current_placement_group()
    if group is not None:  # inside a Tune trial: bundle 0 is the trial's own (PACK puts it on the trial's node)
        return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def raise_application_error(err: Exception) -> None:
    """Errors raised by our code inside an actor surface as themselves; only lost actors are retried."""
    cause = getattr(err, "cause", None)
    if isinstance(err, RayTaskError) and not isinstance(cause, LostActorError):
        raise cause if isinstance(cause, UserError) else err


def new_worker(cfg: ExperimentConfig):
    r = cfg.resources
    return TaskWorker.options(num_cpus=r.num_cpus, num_gpus=r.num_gpus, memory=r.ray_resources().get("memory"),
                              **RETRIES).remote()


def new_central():
    return CentralActor.options(num_cpus=0, scheduling_strategy=_same_node_strategy(), **RETRIES).remote()


class RayStep:
    def __init__(self, cfg: ExperimentConfig, checkpoint_dir: Path | None, pool: WorkerPool | None = None):
        ensure_ray()
        check_gpus(cfg)
        self.cfg, self.pool, self.shape = cfg, pool, run_shape(cfg)
        self.scratch = None
        if checkpoint_dir is None:  # the CentralActor always checkpoints: a restart must find its state
            checkpoint_dir = self.scratch = Path(tempfile.mkdtemp(prefix="imlca-run-"))
        self.checkpoint_dir, self.tree = str(checkpoint_dir), to_dict(cfg)
        self.run_id, self.threads = uuid.uuid4().hex, max(1, math.floor(cfg.resources.num_cpus))
        warm = pool.take(self.shape) if pool is not None else None
        self.worker = warm.worker if warm else new_worker(cfg)
        self.central = warm.central if warm else new_central()
        self.theta0 = None  # θ0 in the object store, from the worker's first `setup`
        try:
            self._configure()
        except BaseException:  # e.g. a config the worker refuses: no run will close these actors
            ActorPair(self.worker, self.central).kill()
            raise
        self.state_ref = None  # (merged, heads) after the latest merge, as an object ref
        self.ahead: dict = {}  # task → its training, queued behind the previous task's evaluation

    def _configure(self) -> None:
        """Point both actors at this run: a no-op for an actor already on it, a rebuild for a restarted one."""
        self.worker = self._configured(self.worker, lambda: new_worker(self.cfg),
                                       lambda a: a.configure.remote(self.run_id, self.tree, self.threads))
        if self.theta0 is None:
            theta0, self.dim, self.num_tasks = ray.get(self.worker.setup.remote())
            self.theta0 = ray.put(theta0)
        self.central = self._configured(self.central, new_central, lambda a: a.configure.remote(
            self.run_id, self.tree, self.theta0, self.dim, self.checkpoint_dir))

    @staticmethod
    def _configured(actor, make, configure):
        """`configure(actor)`, or on a new actor from `make()` when Ray gave up restarting this one."""
        try:
            ray.get(configure(actor))
            return actor
        except RayActorError:  # dead for good (its restarts used up): replace it
            actor = make()
        except RayTaskError as err:
            raise_application_error(err)
            raise
        ray.get(configure(actor))
        return actor

    def resume(self) -> list[dict]:
        done = ray.get(self.central.tasks_done.remote())
        return [ray.get(self.central.report.remote(t)) for t in range(done)]

    def _task(self, task: int) -> dict:
        """Train → merge + align → evaluate → record, actor to actor. Only the report reaches the driver.

        Task t+1's training is queued on the TaskWorker right behind task t's evaluation, from the same merge (the
        call the next `_task` would make: every task's seeds are its own), so the worker goes from evaluating to
        training at once: the record, the checkpoint after it and what the caller does with it (Tune's report, an
        upload to the bucket) happen while it trains, and cost no worker time."""
        trained = self.ahead.pop(task, None)  # a retry (after a lost actor) trains again
        if trained is None:
            trained = self.worker.train.remote(task, self.central.train_input.remote())
        self.state_ref = self.central.integrate.remote(trained)
        evaluated = self.worker.evaluate.remote(task, self.state_ref)
        if task + 1 < self.num_tasks:
            self.ahead = {task + 1: self.worker.train_from.remote(task + 1, self.state_ref)}
        return ray.get(self.central.record.remote(task, evaluated))

    def _retrying(self, task: int, call):
        """`call()`, again after a lost actor: Ray restarts it (a CentralActor from its last checkpoint)."""
        for attempt in range(RETRIES["max_restarts"] + 1):
            try:
                return call()
            except (RayActorError, RayTaskError) as err:
                raise_application_error(err)
                if attempt == RETRIES["max_restarts"]:
                    raise
                print(f"task {task}: {err.__class__.__name__}; running it again from the merge state", flush=True)
                self._configure()  # a restarted actor is empty: point it at this run again
        raise AssertionError("unreachable")

    def run_task(self, task: int) -> dict:
        return self._retrying(task, lambda: self._task(task))

    def _save(self, task: int) -> None:
        if ray.get(self.central.tasks_done.remote()) <= task:  # a restarted CentralActor lacks this task: redo it
            self._task(task)
        ray.get(self.central.save.remote(task))

    def robustness(self) -> dict[str, float]:
        return ray.get(self.worker.robustness.remote(self.state_ref))

    def save(self, task: int) -> None:
        """Checkpoint after `task` (meanwhile the TaskWorker trains the next task: `_task`)."""
        self._retrying(task, lambda: self._save(task))

    def final(self) -> tuple[dict[str, list[list[float]]], Tensors, Heads]:
        final = ray.get(self.central.snapshot.remote())
        return final["acc"], to_torch(final["merged"]), heads_to_torch(final["heads"])

    def close(self) -> None:
        pair = ActorPair(self.worker, self.central)
        if self.pool is not None:  # the next run of this process configures them afresh
            self.pool.give_back(self.shape, pair)
        else:
            pair.kill()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def run_distributed(cfg: ExperimentConfig, on_task: Callback | None = None, checkpoint_dir: Path | None = None,
                    pool: WorkerPool | None = None) -> RunResult:
    """The protocol on Ray; with `checkpoint_dir`, saves after every task and resumes from the latest checkpoint;
    with `pool`, on warm actors from it, handed back at the end."""
    return run_protocol(cfg, on_task, checkpoint_dir, step=lambda c, d: RayStep(c, d, pool))
