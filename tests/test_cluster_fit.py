"""Trials that fit the machines: every sweep and experiment under sweeps/paper/ fits at least one worker type of
every cluster config (CPU, GPU, memory, as Ray counts them), and every GPU worker type runs as many trials at
once as it has GPUs (no GPU left idle for want of CPUs or memory). Instance sizes are the providers' sheets."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import yaml

from imlca.config import ExperimentConfig, ResourcesConfig, from_dict, load_config, merge_trees, read_yaml
from imlca.config.sweep import candidate_values, load_sweep

ROOT = Path(__file__).resolve().parents[1]
PAPER = sorted((ROOT / "sweeps" / "paper").glob("*.yaml"))
OBJECT_STORE_SHARE = 0.3  # Ray's default: the rest of a node's RAM is its `memory` resource
# vCPUs and RAM (GiB) of the machine types the configs use: the EC2 and Compute Engine instance-type sheets.
MACHINES = {"m5.2xlarge": (8, 32), "g5.2xlarge": (8, 32), "p4d.24xlarge": (96, 1152),
            "n2-standard-8": (8, 32), "g2-standard-8": (8, 32), "a2-highgpu-1g": (12, 85)}
KUBE_UNITS = {"Gi": 2**30, "G": 10**9, "Mi": 2**20, "M": 10**6}


def ray_memory(ram_bytes: float) -> int:
    return int(ram_bytes * (1 - OBJECT_STORE_SHARE))


def launcher_workers(name: str) -> dict[str, dict[str, float]]:
    config = yaml.safe_load((ROOT / "cluster" / name).read_text())
    types = dict(config["available_node_types"])
    types.pop(config["head_node_type"])
    return {n: t["resources"] for n, t in types.items()}


def kube_quantity(text: str) -> float:
    for unit, factor in KUBE_UNITS.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def kuberay_workers(name: str) -> dict[str, dict[str, float]]:
    spec = yaml.safe_load((ROOT / "cluster" / "kuberay" / name).read_text())["spec"]
    spec = spec.get("rayClusterSpec", spec)
    found = {}
    for group in spec["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        found[group["groupName"]] = {"CPU": kube_quantity(limits["cpu"]),
                                     "GPU": kube_quantity(limits.get("nvidia.com/gpu", "0")),
                                     "memory": ray_memory(kube_quantity(limits["memory"]))}
    return found


CLUSTERS = {"aws.yaml": launcher_workers("aws.yaml"), "gcp.yaml": launcher_workers("gcp.yaml"),
            "kuberay/raycluster.yaml": kuberay_workers("raycluster.yaml")}


def trial_resources(path: Path) -> list[dict[str, float]]:
    """What one trial holds in Ray, for every grid point of a sweep (or the one experiment config)."""
    tree = read_yaml(path)
    if "space" not in tree and "base" not in tree:
        return [load_config(path).resources.ray_resources()]
    sweep = load_sweep(path)
    keys = list(sweep.cfg.space)
    combos = itertools.islice(itertools.product(*(candidate_values(sweep.cfg.space[k]) for k in keys)), 512)
    return [from_dict(ExperimentConfig, merge_trees(sweep.base_tree, dict(zip(keys, c)))).resources.ray_resources()
            for c in combos]


def trials_per_node(node: dict[str, float], trial: dict[str, float]) -> int:
    return min(math.floor(node.get(k, 0) / amount + 1e-9) for k, amount in trial.items())


def test_ray_resources_of_a_paper_trial():
    assert ResourcesConfig(num_cpus=7, num_gpus=1, memory_gb=16).ray_resources() == {
        "CPU": 7, "GPU": 1, "memory": 16 * 2**30}
    assert ResourcesConfig(num_cpus=2, num_gpus=0.25).ray_resources() == {"CPU": 2, "GPU": 0.25}  # no memory ask


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_worker_resources_are_what_the_machine_has(name):
    config = yaml.safe_load((ROOT / "cluster" / name).read_text())
    for node_type in config["available_node_types"].values():
        machine = node_type["node_config"].get("InstanceType") or node_type["node_config"]["machineType"]
        cpus, ram_gib = MACHINES[machine]
        assert node_type["resources"]["CPU"] == cpus, machine
        if node_type["resources"]["GPU"]:  # workers tell the autoscaler their memory, as Ray would count it
            assert node_type["resources"]["memory"] == ray_memory(ram_gib * 2**30), machine


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.name)
@pytest.mark.parametrize("cluster", sorted(CLUSTERS))
def test_paper_trials_fit_a_worker_type(cluster, path):
    for trial in trial_resources(path):
        fits = {name: trials_per_node(node, trial) for name, node in CLUSTERS[cluster].items()}
        assert max(fits.values()) >= 1, f"{path.name} {trial} fits no worker of {cluster}: {CLUSTERS[cluster]}"


@pytest.mark.parametrize("cluster", sorted(CLUSTERS))
def test_every_gpu_type_runs_a_trial_per_gpu(cluster):
    trials = [t for path in PAPER for t in trial_resources(path)]
    assert trials and all(t.get("GPU") for t in trials)  # paper trials train on a GPU
    for name, node in CLUSTERS[cluster].items():
        for trial in trials:
            assert trials_per_node(node, trial) == node["GPU"] // trial["GPU"], (name, node, trial)


def test_the_check_catches_a_worker_too_small_for_a_trial():
    # What aws.yaml had: g5.xlarge workers with 4 CPUs, for trials of 7 CPUs: no trial ever ran there.
    paper = trial_resources(ROOT / "sweeps" / "paper" / "table1.yaml")[0]
    assert trials_per_node({"CPU": 4, "GPU": 1, "memory": ray_memory(16 * 2**30)}, paper) == 0
    assert trials_per_node({"CPU": 96, "GPU": 8, "memory": ray_memory(1152 * 2**30)}, paper) == 8
    small = {"CPU": 2, "GPU": 0.25}  # a fractional-GPU trial: four share each GPU
    assert trials_per_node({"CPU": 96, "GPU": 8}, small) == 32
