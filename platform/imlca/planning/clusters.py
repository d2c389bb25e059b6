"""Worker types of a Ray cluster: a launcher config (`ray up` YAML), a KubeRay manifest, or this machine.

Prices: Ray's schema admits no unknown key in a node type, but it admits string `labels`, which Ray attaches to
the nodes it starts; `imlca.io/usd-per-hour: "1.212"` there is the node's hourly price. `--price TYPE=USD`
overrides or adds one. Memory is in bytes, as Ray counts it (70% of a node's RAM; the rest is its object store).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from imlca.errors import UserError

PRICE_LABEL = "imlca.io/usd-per-hour"
OBJECT_STORE_SHARE = 0.3  # Ray's default: the rest of a node's RAM is its `memory` resource
KUBE_UNITS = {"Gi": 2**30, "G": 10**9, "Mi": 2**20, "M": 10**6}


@dataclass
class WorkerType:
    name: str
    resources: dict[str, float]  # CPU, GPU, memory (bytes), as Ray counts them
    max_workers: int
    price: float | None = None  # USD per node-hour; None: unknown
    accelerator: str = ""  # the node's GPU as torch names it, a fragment such as "A10G" ("": none or unknown)


@dataclass
class Cluster:
    name: str
    types: list[WorkerType]
    max_workers: int  # all worker types together
    local: bool = False  # this machine, as local Ray sees it (one node, no autoscaler)
    idle_timeout_s: float = 0.0  # an idle worker is kept (and billed) this long before the autoscaler removes it


def _price(labels: dict | None) -> float | None:
    text = (labels or {}).get(PRICE_LABEL)
    return None if text is None else float(text)


# instance family → the fragment of torch.cuda.get_device_name() its GPU reports (the providers' sheets)
INSTANCE_GPUS = {"g5.": "A10G", "g6.": "L4", "p4d.": "A100", "p4de.": "A100", "p5.": "H100", "g2-": "L4",
                 "a2-": "A100", "a3-": "H100"}


def _accelerator(node_config: dict) -> str:
    machine = str(node_config.get("InstanceType") or node_config.get("machineType") or "")
    return next((gpu for family, gpu in INSTANCE_GPUS.items() if machine.startswith(family)), "")


def launcher_cluster(path: Path, config: dict) -> Cluster:
    types = []
    for name, spec in config["available_node_types"].items():
        if name == config.get("head_node_type"):
            continue  # the head runs the driver, Tune and MLflow; no trial lands there (GPU 0)
        types.append(WorkerType(name, dict(spec.get("resources", {})), int(spec.get("max_workers", 0)),
                                _price(spec.get("labels")), _accelerator(spec.get("node_config", {}))))
    return Cluster(path.name, types, int(config.get("max_workers", sum(t.max_workers for t in types))),
                   idle_timeout_s=60.0 * config.get("idle_timeout_minutes", 5))  # Ray's default: 5 minutes


def _quantity(text) -> float:
    text = str(text)
    for unit, factor in KUBE_UNITS.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def kuberay_cluster(path: Path, config: dict) -> Cluster:
    spec = config["spec"].get("rayClusterSpec", config["spec"])
    types = []
    for group in spec["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        resources = {"CPU": _quantity(limits["cpu"]), "GPU": _quantity(limits.get("nvidia.com/gpu", 0)),
                     "memory": int(_quantity(limits["memory"]) * (1 - OBJECT_STORE_SHARE))}
        labels = group["template"].get("metadata", {}).get("labels")
        types.append(WorkerType(group["groupName"], resources, int(group.get("maxReplicas", 0)), _price(labels),
                                (labels or {}).get("imlca.io/gpu", "")))
    return Cluster(path.name, types, sum(t.max_workers for t in types))


def read_cluster(path: str | Path) -> Cluster:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UserError(f"--cluster {path}: cannot read it ({err.strerror}); give a Ray cluster YAML such as "
                        "cluster/aws.yaml") from None
    if isinstance(config, dict) and "available_node_types" in config:
        return launcher_cluster(path, config)
    if isinstance(config, dict) and "workerGroupSpecs" in config.get("spec", {}).get("rayClusterSpec",
                                                                                      config.get("spec", {})):
        return kuberay_cluster(path, config)
    raise UserError(f"--cluster {path}: neither a Ray launcher config (available_node_types) nor a KubeRay "
                    "RayCluster/RayJob (workerGroupSpecs)")


def local_cluster(resources: dict[str, float], accelerator: str) -> Cluster:
    """This machine as local Ray sees it: one node, trials side by side up to max_concurrent_trials."""
    return Cluster("this machine (local Ray)", [WorkerType("local", resources, 1, None, accelerator)], 1, local=True)


def apply_prices(cluster: Cluster, prices: list[str]) -> None:
    """`--price TYPE=USD` (per node-hour)."""
    by_name = {t.name: t for t in cluster.types}
    for text in prices:
        name, _, value = text.partition("=")
        if name not in by_name:
            raise UserError(f"--price {text}: no worker type '{name}' in {cluster.name}; use one of "
                            f"{', '.join(by_name)}")
        try:
            by_name[name].price = float(value)
        except ValueError:
            raise UserError(f"--price {text}: '{value}' is not a number; write TYPE=USD, e.g. {name}=1.21") from None
