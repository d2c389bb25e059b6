"""Joining or starting Ray, and refusing early what the cluster can never give."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager

import ray

from imlca.config import ExperimentConfig
from imlca.errors import ResourceError


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS (or the one this process runs in), else start a local one."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
    else:
        # Ray starts its workers at niceness 15: on a busy machine a TaskWorker then runs well behind the same loop
        # in the driver (bench lora_worker 1.43x vs 0.96x at 0, load 20-30); a local cluster keeps them at 0
        os.environ.setdefault("RAY_worker_niceness", "0")
        # workers' logs stay in Ray's session folder: the driver prints its own progress lines
        with _loopback_only():
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)


@contextmanager
def _loopback_only():
    """A one-node cluster started inside listens on 127.0.0.1 only: nothing else needs to reach it. Ray takes the
    machine's address as the node's, even when given 127.0.0.1, unless it runs as on macOS and Windows (its
    ENABLE_RAY_CLUSTER switch off): then the node's address is 127.0.0.1, and its GCS, raylet, agents and workers
    bind that address. The switch is put back once the node is up (joining a cluster later works as before)."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def local_node() -> dict[str, float]:
    """CPU, GPU and memory (bytes) that `ray.init()` on this machine gives its one node (no Ray is started)."""
    from ray._private.resource_and_label_spec import ResourceAndLabelSpec

    spec = ResourceAndLabelSpec().resolve(is_head=True)
    return {"CPU": float(spec.num_cpus), "GPU": float(spec.num_gpus or 0), "memory": float(spec.memory)}


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
