"""The plan: for every worker type, how many trials run at once, the wall time, node- and GPU-hours and the price;
the chosen type (the cheapest when every type has a price, else the fastest); warnings.

Refused with one line (exit 2): a trial that fits no worker type, and a plan whose figures no probe has measured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from imlca.config import ExperimentConfig, from_dict
from imlca.errors import UserError
from imlca.planning.clusters import Cluster, WorkerType
from imlca.planning.estimate import (MissingFigures, TrialCost, fixed_seconds, model_figure, per_node, schedule,
                                     trial_cost)
from imlca.planning.figures import Device, Figures
from imlca.planning.memory import TrialMemory, describe, trial_memory
from imlca.planning.workload import Workload

GIB = 2**30


@dataclass
class TypePlan:
    worker: WorkerType
    per_node: int  # trials one node holds
    nodes: int = 0  # nodes the autoscaler starts
    parallel: int = 0  # trials at once
    wall_s: float | None = None
    node_hours: float | None = None
    gpu_hours: float | None = None  # billed: the nodes' GPUs × their hours
    price: float | None = None
    costs: list[TrialCost] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    device: Device | None = None


@dataclass
class Plan:
    work: Workload
    cluster: Cluster
    trial_resources: dict[str, float]
    types: list[TypePlan]
    chosen: TypePlan
    sweep_fixed_s: float  # the driver's imports, Ray, Tune's start-up and end
    slot_imports_s: float  # each slot's process imports (a TaskWorker's, or a cached trial's model code)
    warnings: list[str]
    memory: dict[str, TrialMemory] = field(default_factory=dict)  # per benchmark: its largest trial's peak
    notes: list[str] = field(default_factory=list)  # per family: what a task trains, what the centre holds


def describe_resources(resources: dict[str, float]) -> str:
    return ", ".join(f"{k} {v / GIB:.1f} GiB" if k == "memory" else f"{k} {v:g}" for k, v in resources.items())


def device_for(worker: WorkerType, cluster: Cluster, trial: dict[str, float], local_device: str,
               parallel: int) -> Device:
    """On this machine, figures taken with as many probes at once as trials run at once; a GPU trial elsewhere
    holds its own GPU."""
    threads = max(1, math.floor(trial.get("CPU", 1)))
    if cluster.local:
        return Device(local_device, threads, max(1, parallel))
    return Device(worker.accelerator or "unknown GPU", threads) if trial.get("GPU") else Device("cpu", threads)


def local_parallel(work: Workload, node: dict[str, float]) -> int:
    """Trials at once on this machine: max_concurrent_trials, the trials there are, and what fits its resources."""
    trial = from_dict(ExperimentConfig, work.sweep.base_tree).resources.ray_resources()
    return max(1, min(work.sweep.cfg.max_concurrent_trials, len(work.trials), per_node(node, trial)))


def plan_type(work: Workload, cluster: Cluster, worker: WorkerType, trial: dict[str, float], figures: Figures,
              local_device: str, fixed: tuple[float, float]) -> TypePlan:
    tp = TypePlan(worker, per_node(worker.resources, trial))
    cfg = work.sweep.cfg
    if tp.per_node == 0 or worker.max_workers == 0:
        return tp
    want = min(cfg.max_concurrent_trials, len(work.trials))
    tp.nodes = 1 if cluster.local else min(worker.max_workers, cluster.max_workers, math.ceil(want / tp.per_node))
    tp.parallel = min(want, tp.nodes * tp.per_node)
    tp.device = device_for(worker, cluster, trial, local_device, tp.parallel)
    try:
        tp.costs = [trial_cost(t, figures, tp.device, cfg.cached) for t in work.trials]
    except MissingFigures as err:
        tp.missing = err.what
        return tp
    sweep_s, slot_s = fixed
    ends = schedule(tp.costs, tp.parallel, slot_s)
    tp.wall_s = sweep_s + max(ends)
    busy = [max(ends[i: i + tp.per_node]) + cluster.idle_timeout_s for i in range(0, len(ends), tp.per_node)]
    tp.node_hours = sum(busy) / 3600
    tp.gpu_hours = tp.node_hours * worker.resources.get("GPU", 0)
    tp.price = None if worker.price is None else tp.node_hours * worker.price
    return tp


def choose(types: list[TypePlan]) -> TypePlan | None:
    ready = [t for t in types if t.wall_s is not None]
    if not ready:
        return None
    if all(t.price is not None for t in ready):
        return min(ready, key=lambda t: (t.price, t.wall_s))
    return min(ready, key=lambda t: t.wall_s)


class MissingFigureError(UserError):
    """No wall time without a measured figure; `trial` (a trial's Ray resources) lets the caller show the work that
    was counted before it."""

    def __init__(self, message: str, trial: dict[str, float]):
        super().__init__(message)
        self.trial = trial


def make_plan(work: Workload, cluster: Cluster, figures: Figures, local_device: str) -> Plan:
    base = from_dict(ExperimentConfig, work.sweep.base_tree)
    trial = base.resources.ray_resources()
    fitting = [w for w in cluster.types if per_node(w.resources, trial) >= 1 and w.max_workers > 0]
    if not fitting:
        sizes = "; ".join(f"{w.name}: {describe_resources(w.resources)} (max_workers {w.max_workers})"
                          for w in cluster.types)
        raise UserError(f"a trial needs {describe_resources(trial)} and fits no worker type of {cluster.name} "
                        f"({sizes}); lower resources.* in the sweep or add a larger worker type")
    try:
        fixed = fixed_seconds(figures, work.sweep.cfg.cached)
    except MissingFigures as err:
        fixed, missing_fixed = (0.0, 0.0), err.what
    else:
        missing_fixed = []
    types = [plan_type(work, cluster, w, trial, figures, local_device, fixed) for w in cluster.types]
    chosen = choose(types) if not missing_fixed else None
    if chosen is None:
        missing = next((t.missing for t in types if t.missing), missing_fixed)
        raise MissingFigureError(f"no measured figure for {missing[0]}; run this plan with --probe on such a "
                                 "device (on a GPU, `imlca bench --gpu` also records them); the plan does not guess",
                                 trial)
    memories = trial_memories(work, figures)
    return Plan(work, cluster, trial, types, chosen, fixed[0], fixed[1],
                warnings(work, cluster, types, trial, memories), memories, family_notes(work, figures, chosen.device))


def family_notes(work: Workload, figures: Figures, device: Device) -> list[str]:
    """Per method family of the sweep, from the probed figures: the parameters a task trains and the central
    state after the last task (the weights that travel + the Gaussian bank's float64 statistics)."""
    out, seen = [], set()
    for t in work.trials:
        family = t.cfg.align.family
        model = model_figure(figures, t, device)
        if family in seen or model is None or "trainable_params" not in model:
            continue
        seen.add(family)
        dim, classes = model["dim"], t.tasks[-1].classes
        bank = classes * (dim * dim + dim + 1) * 8
        out.append(f"{family}: a task trains {model['trainable_params'] / 1e6:.2f}M parameters (probed); the centre "
                   f"holds weights of {model['backbone_bytes'] / 2**20:.0f} MiB + Gaussians of {bank / 2**20:.0f} MiB "
                   f"({classes} classes × {dim}²) after the last task")
    return out


def warnings(work: Workload, cluster: Cluster, types: list[TypePlan], trial: dict[str, float],
             memories: dict[str, TrialMemory]) -> list[str]:
    out = []
    want = min(work.sweep.cfg.max_concurrent_trials, len(work.trials))
    for tp in types:
        if tp.per_node == 0:
            out.append(f"a trial ({describe_resources(trial)}) does not fit worker type {tp.worker.name}")
        elif tp.parallel < want and not cluster.local:
            out.append(f"{want} trials could run at once but {tp.worker.name} runs {tp.parallel} "
                       f"({tp.nodes} node(s) × {tp.per_node}; max_workers)")
    if cluster.local and types[0].parallel < want:
        out.append(f"max_concurrent_trials allows {want} trials at once; this machine's "
                   f"{describe_resources(types[0].worker.resources)} hold {types[0].parallel}")
    out += memory_warnings(memories, types, trial)
    if work.random_keys:
        out.append(f"drawn keys ({', '.join(work.random_keys)}) are sized with their first listed value")
    if any(t.counts_from == "registry" for t in work.trials):
        names = sorted({t.cfg.data.benchmark for t in work.trials if t.counts_from == "registry"})
        out.append(f"image counts of {', '.join(names)} are the registry's published ones (the data is not here)")
    return out


def feature_dim(figures: Figures, backbone: str) -> int | None:
    """The backbone's feature dim, as the probe recorded it with its throughput."""
    dims = {v.get("dim") for k, v in figures.doc["models"].items() if k.startswith(backbone + "|")} - {None}
    return max(dims) if dims else None


def trial_memories(work: Workload, figures: Figures) -> dict[str, TrialMemory]:
    """Per benchmark, the peak memory of its largest trial (planning/memory.py)."""
    out: dict[str, TrialMemory] = {}
    for t in work.trials:
        dim = feature_dim(figures, t.cfg.model.backbone)
        if dim is not None:
            memory = trial_memory(t, dim, work.sweep.cfg.cached)
            if t.cfg.data.benchmark not in out or memory.peak > out[t.cfg.data.benchmark].peak:
                out[t.cfg.data.benchmark] = memory
    return out


def memory_warnings(memories: dict[str, TrialMemory], types: list[TypePlan], trial: dict[str, float]) -> list[str]:
    """One line per benchmark whose trial needs more than a trial gets: the memory it reserves
    (resources.memory_gb), else its share of a node (the node's memory over the trials it holds)."""
    out = []
    for name, memory in memories.items():
        short = []
        for tp in types:
            node = tp.worker.resources.get("memory")
            limit = trial.get("memory") or (node / tp.per_node if node and tp.per_node else None)
            if limit and memory.peak > limit:
                short.append(f"{tp.worker.name} ({limit / GIB:.1f} GiB)")
        if short:
            out.append(f"{name}: a trial needs {describe(memory)}, more than it gets on {', '.join(short)}; raise "
                       "resources.memory_gb (or choose a worker type with more memory) or lower "
                       "align.samples_per_class")
    return out
