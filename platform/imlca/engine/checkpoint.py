"""Task-boundary checkpoints: `<dir>/task-NNN/{state.safetensors, meta.json}`.

A checkpoint is written into a temporary folder, fsynced, then renamed into place: a folder named task-NNN is
complete or absent. It is written in two halves (`write_tensors`, `finish_checkpoint`), so that the tensors can be
written as soon as they are final, before the rest of the state (the accuracies) is known. meta.json carries the
SHA-256 of the tensor file (verified on load) and a fingerprint of the config that shapes the run, so a checkpoint
of another experiment is refused. Randomness needs no saved state: every draw comes from a generator seeded by
(seed, purpose, task) (engine/seeding.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from imlca.errors import CheckpointError

TENSORS, META = "state.safetensors", "meta.json"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def task_dir(root: Path, task: int) -> Path:
    return Path(root) / f"task-{task:03d}"


@dataclass(frozen=True)
class WrittenTensors:
    """A checkpoint's tensor file, written and fsynced in its temporary folder, not yet in place."""
    root: Path
    task: int
    folder: Path
    sha256: str


def write_tensors(root: str | Path, task: int, tensors: dict[str, torch.Tensor]) -> WrittenTensors:
    """The first half of a checkpoint: the tensors (the bulk of it) into a temporary folder under `root`."""
    root = Path(root)
    for stale in root.glob(f".tmp-task-{task:03d}-*"):  # this task's, from this process or a killed one before it
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-task-{task:03d}-{os.getpid()}"
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
    _fsync(tmp / TENSORS)
    return WrittenTensors(root, task, tmp, _sha256(tmp / TENSORS))


def finish_checkpoint(written: WrittenTensors, meta: dict) -> Path:
    """The second half: meta.json beside the tensors, then the folder renamed into place; returns it."""
    final = task_dir(written.root, written.task)
    (written.folder / META).write_text(json.dumps({**meta, "task": written.task, "sha256": written.sha256}))
    _fsync(written.folder / META)
    if final.exists():  # an identical re-delivery of the same task: replace as one step
        shutil.rmtree(final)
    os.replace(written.folder, final)
    _fsync(written.root)
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    folders = sorted(Path(root).glob("task-[0-9][0-9][0-9]")) if Path(root).is_dir() else []
    return folders[-1] if folders else None


def load_checkpoint(folder: str | Path, fingerprint: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    folder = Path(folder)
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        raise CheckpointError(f"checkpoint {folder} has no readable {META}; delete the folder to resume from "
                              "the previous task") from None
    if not (folder / TENSORS).is_file() or _sha256(folder / TENSORS) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {folder}: {TENSORS} is missing or fails its checksum (corrupt); "
                              "delete the folder to resume from the previous task")
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise CheckpointError(f"checkpoint {folder} belongs to a different experiment config; resume with the "
                              "config it was written with, or use a new output folder")
    return load_file(str(folder / TENSORS)), meta
