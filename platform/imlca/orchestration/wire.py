"""Tensors cross process boundaries as numpy arrays: the object store shares them zero-copy with readers."""
from __future__ import annotations

import numpy as np
import torch

from imlca.engine.task_output import TaskOutput


def to_numpy(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in tensors.items()}


def to_torch(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    # copy: arrays from the object store are read-only views of shared memory
    return {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}


def heads_to_numpy(heads: dict[str, list[torch.Tensor]]) -> dict[str, list[np.ndarray]]:
    return {m: [h.detach().cpu().numpy() for h in hs] for m, hs in heads.items()}


def heads_to_torch(heads: dict[str, list[np.ndarray]]) -> dict[str, list[torch.Tensor]]:
    return {m: [torch.from_numpy(np.array(h)) for h in hs] for m, hs in heads.items()}


def output_to_wire(out: TaskOutput) -> dict:
    return {"task": out.task, "adapter": to_numpy(out.adapter), "head": out.head.numpy(),
            "statistics": to_numpy(out.statistics), "losses": out.losses}


def output_from_wire(wire: dict) -> TaskOutput:
    return TaskOutput(wire["task"], to_torch(wire["adapter"]), torch.from_numpy(np.array(wire["head"])),
                      to_torch(wire["statistics"]), list(wire["losses"]))
