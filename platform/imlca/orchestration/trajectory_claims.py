"""Who trains a trajectory that several trials need (Ray side of the trajectory cache).

`ClaimBoard` is one named, detached actor per cluster (no CPU): `claim(fingerprint)` is true for exactly one caller
until that caller releases it, so concurrent trials needing the same trajectory train it once; the others poll the
cache (`engine.trajectory_cache.obtain`). A claim whose holder died is taken over after `LEASE_S`.
"""
from __future__ import annotations

import math
import time

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

BOARD, NAMESPACE = "imlca-trajectory-claims", "imlca"
LEASE_S = 6 * 3600.0  # longer than any trajectory takes to train; only a crashed holder's claim ever expires


@ray.remote(num_cpus=0)
class ClaimBoard:
    def __init__(self):
        self.held: dict[str, float] = {}  # fingerprint → when it was claimed

    def claim(self, fingerprint: str, lease_s: float) -> bool:
        now = time.time()
        if now - self.held.get(fingerprint, -math.inf) < lease_s:
            return False
        self.held[fingerprint] = now
        return True

    def release(self, fingerprint: str) -> None:
        self.held.pop(fingerprint, None)


class RayClaims:
    """The `Claims` of `engine.trajectory_cache.obtain`, backed by the cluster's ClaimBoard."""

    def __init__(self, lease_s: float = LEASE_S):
        # outside the calling trial's placement group: the board outlives the trial that happened to create it
        outside = PlacementGroupSchedulingStrategy(placement_group=None)
        self.board = ClaimBoard.options(name=BOARD, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
                                        scheduling_strategy=outside).remote()
        self.lease_s = lease_s

    def claim(self, fingerprint: str) -> bool:
        return ray.get(self.board.claim.remote(fingerprint, self.lease_s))

    def release(self, fingerprint: str) -> None:
        ray.get(self.board.release.remote(fingerprint))
