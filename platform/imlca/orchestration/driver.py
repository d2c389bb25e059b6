"""`run_distributed`: the protocol with a TaskWorker and a MergeActor; tensors flow actor to actor as object refs.

Same steps, same seeds as `engine.protocol.run_protocol`, hence the same numbers (tested).
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time

from pathlib import Path

import ray
from ray.exceptions import RayActorError, RayTaskError

from imlca.config import ExperimentConfig, to_dict
from imlca.engine.protocol import Callback, RunResult, make_result
from imlca.errors import ResourceError, UserError
from imlca.orchestration.actors import LostMergeError, MergeActor, TaskWorker
from imlca.orchestration.wire import heads_to_torch, to_torch

RETRIES = dict(max_restarts=3, max_task_retries=3)  # a killed actor is restarted and its call re-run


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS (or the one this process runs in), else start a local one."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
    else:
        # workers' logs stay in Ray's session folder: the driver prints its own progress lines
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)


def shutdown_ray() -> None:
    """Shut Ray down if something in this process started or joined it."""
    if ray.is_initialized():
        ray.shutdown()


def check_gpus(cfg: ExperimentConfig) -> None:
    """Refuse early a GPU request that the cluster can never satisfy."""
    wanted = cfg.resources.num_gpus
    have = ray.cluster_resources().get("GPU", 0)
    autoscaling = bool(os.environ.get("IMLCA_AUTOSCALING"))
    if wanted > 0 and have < wanted and not autoscaling:
        raise ResourceError(f"resources.num_gpus={wanted:g} but the Ray cluster has {have:g} GPUs; set "
                            "resources.num_gpus=0 to train on CPU, or run on a GPU cluster "
                            "(IMLCA_AUTOSCALING=1 when workers are added on demand)")


def _same_node_strategy():
    """Keep the MergeActor beside this driver: its checkpoint folder is on this node's disk."""
    from ray.util.placement_group import get_current_placement_group
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

    group = get_current_placement_group()
    if group is not None:  # inside a Tune trial: bundle 0 is the trial's own (PACK puts it on the trial's node)
        return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def start_actors(cfg: ExperimentConfig, checkpoint_dir: Path | None):
    tree = to_dict(cfg)
    r = cfg.resources
    worker = TaskWorker.options(num_cpus=r.num_cpus, num_gpus=r.num_gpus, **RETRIES).remote(
        tree, max(1, math.floor(r.num_cpus)))
    theta0, dim, num_tasks = ray.get(worker.setup.remote())
    merger = MergeActor.options(num_cpus=0, scheduling_strategy=_same_node_strategy(), **RETRIES).remote(
        tree, theta0, dim, str(checkpoint_dir) if checkpoint_dir else None)
    return worker, merger, num_tasks


def raise_application_error(err: Exception) -> None:
    """Errors raised by our code inside an actor surface as themselves; only lost actors are retried."""
    cause = getattr(err, "cause", None)
    if isinstance(err, RayTaskError) and not isinstance(cause, LostMergeError):
        raise cause if isinstance(cause, UserError) else err


def run_task(worker, merger, task: int, robustness: bool) -> dict:
    """One task, actor to actor: train → merge + align → evaluate → record. Only the report reaches the driver."""
    state_ref = merger.integrate.remote(worker.train.remote(task, merger.merged.remote()))
    report = ray.get(merger.record.remote(task, worker.evaluate.remote(task, state_ref)))
    if robustness:
        report.update(ray.get(worker.robustness.remote(state_ref)))
    return report


def run_distributed(cfg: ExperimentConfig, on_task: Callback | None = None,
                    checkpoint_dir: Path | None = None) -> RunResult:
    """The protocol on Ray; with `checkpoint_dir`, saves after every task and resumes from the latest checkpoint.

    A killed TaskWorker is restarted by Ray and its call re-run; a killed MergeActor restarts from its last
    checkpoint and the driver re-runs whatever that checkpoint lacks (every step is deterministic)."""
    start = time.perf_counter()
    ensure_ray()
    check_gpus(cfg)
    scratch = None
    if checkpoint_dir is None:  # the MergeActor always checkpoints: a restart must find its state
        checkpoint_dir = scratch = Path(tempfile.mkdtemp(prefix="imlca-run-"))
    worker, merger, num_tasks = start_actors(cfg, checkpoint_dir)
    reports, recoveries = [], 0
    try:
        task = ray.get(merger.tasks_done.remote())
        reports = [ray.get(merger.report.remote(t)) for t in range(task)]
        while task < num_tasks:
            try:
                last = task == num_tasks - 1
                reports.append(run_task(worker, merger, task, last and cfg.robustness.enabled))
            except (RayActorError, RayTaskError) as err:
                raise_application_error(err)
                recoveries += 1
                if recoveries > RETRIES["max_restarts"]:
                    raise
                print(f"task {task}: {err.__class__.__name__}; resuming from the merge state", flush=True)
                task = ray.get(merger.tasks_done.remote())
                del reports[task:]
                continue
            if on_task is not None:
                on_task(reports[-1])
            task += 1
        final = ray.get(merger.snapshot.remote())
    finally:
        for actor in (worker, merger):
            ray.kill(actor)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    heads = heads_to_torch(final["heads"])
    return make_result(final["acc"], reports, time.perf_counter() - start, to_torch(final["merged"]), heads)
