"""Every random draw of a run comes from a generator seeded by (run seed, purpose, task): a retried, resumed or
remote step draws exactly what the uninterrupted in-process run draws, with no RNG state to ship around."""
from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, purpose: str, task: int) -> int:
    digest = hashlib.sha256(f"{seed}/{purpose}/{task}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, purpose: str, task: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, purpose, task))
