"""Warm actors across runs: a process keeps its last run's TaskWorker and CentralActor for its next run.

A sweep's trials run one after another in the same Tune trial process (`reuse_actors=True` keeps the process and
its placement group), so the actors a trial created are still alive, imported (torch, timm, peft) and inside the
trial's bundle when the next trial starts: the next RayStep takes them from this process's pool instead of
starting two new processes. `configure` with a new run id resets them (actors.py), so a reused pair computes what
a new pair computes.

One idle pair per process, kept only for a run of the same shape (the TaskWorker's resources and the placement
group or node both actors were placed in): a pair of another shape is killed, since it holds the resources the
new pair needs. The actors are owned by this process and die with it (Tune ends its trial processes when the
sweep ends). A driver outside Tune uses no pool unless it passes one: an idle actor would hold CPUs that nothing
reserved for it.
"""
from __future__ import annotations

from dataclasses import dataclass

import ray
from ray.actor import ActorHandle

from imlca.config import ExperimentConfig

Shape = tuple  # (num_cpus, num_gpus, memory bytes, placement group or node id)


def run_shape(cfg: ExperimentConfig) -> Shape:
    """What a pair must match to be reused: the TaskWorker's resources and where the actors were placed."""
    from ray.util.placement_group import get_current_placement_group

    group = get_current_placement_group()
    place = group.id.hex() if group is not None else ray.get_runtime_context().get_node_id()
    r = cfg.resources.ray_resources()
    return r.get("CPU", 0.0), r.get("GPU", 0.0), r.get("memory", 0), place


@dataclass
class ActorPair:
    worker: ActorHandle  # TaskWorker
    central: ActorHandle  # CentralActor

    def kill(self) -> None:
        for actor in (self.worker, self.central):
            ray.kill(actor)


class WorkerPool:
    def __init__(self):
        self.idle: dict[Shape, ActorPair] = {}

    def take(self, shape: Shape) -> ActorPair | None:
        """The idle pair of this shape (None when there is none); idle pairs of other shapes are killed."""
        pair = self.idle.pop(shape, None)
        self.close()
        return pair

    def give_back(self, shape: Shape, pair: ActorPair) -> None:
        self.close()
        self.idle[shape] = pair

    def close(self) -> None:
        for pair in self.idle.values():
            pair.kill()
        self.idle.clear()


_PROCESS_POOL: WorkerPool | None = None


def process_pool() -> WorkerPool:
    """This process's pool (a Tune trial process's, kept across the trials it runs)."""
    global _PROCESS_POOL
    if _PROCESS_POOL is None:
        _PROCESS_POOL = WorkerPool()
    return _PROCESS_POOL
