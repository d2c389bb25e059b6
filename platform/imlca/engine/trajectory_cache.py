"""Trajectories stored under a fingerprint of exactly the keys that shape them, on a local folder or an object store.

An entry is `<root>/<fingerprint>/{trajectory.safetensors, manifest.json}`. The data file is written first (locally
under a temporary name, then renamed), the manifest last: it holds the SHA-256 and size of the data file, so an entry
without a readable manifest, or whose data fails the checksum, is a miss and is computed again, never used (object
stores have no rename; their PUT of one object is atomic, so "manifest last" is the commit point there too).
`pyarrow.fs` (installed with Ray) reads and writes local paths and `s3://` URIs alike; no Ray here.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Callable, Protocol

import torch
from pyarrow import fs as pafs
from safetensors.torch import save as save_tensors

from imlca.config import ExperimentConfig, flatten
from imlca.engine.trajectory import TaskStep, Trajectory

FORMAT = 1  # bump when the entry layout or what a trajectory holds changes: older entries then miss
TRAJECTORY_KEYS = ("seed", "data.", "model.", "lora.", "train.", "merge.")
# inside those sections, keys that change where or how a trajectory is computed, not what it is
NOT_SHAPING = ("data.root", "data.num_workers", "train.device")
DATA, MANIFEST = "trajectory.safetensors", "manifest.json"
CHUNK = 1 << 24  # bytes read and hashed at a time
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}  # safetensors' dtype names


def trajectory_keys(cfg: ExperimentConfig) -> dict:
    """The dotted config keys a trajectory depends on (not align, eval, robustness, tracking, resources, names)."""
    return {k: v for k, v in flatten(cfg).items() if k.startswith(TRAJECTORY_KEYS) and not k.startswith(NOT_SHAPING)}


def trajectory_fingerprint(cfg: ExperimentConfig) -> str:
    text = json.dumps({"format": FORMAT, **trajectory_keys(cfg)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def to_tensors(trajectory: Trajectory) -> tuple[dict[str, torch.Tensor], dict]:
    """Flat tensors `<task>.<kind>.<name>` (+ `theta0.<name>`) and the JSON-able rest."""
    tensors = {f"theta0.{k}": v for k, v in trajectory.theta0.items()}
    for s in trajectory.steps:
        for kind in ("adapter", "merged", "statistics"):
            tensors.update({f"{s.task}.{kind}.{k}": v for k, v in getattr(s, kind).items()})
        tensors[f"{s.task}.head.weight"] = s.head
        for part, (feats, targets) in s.features.items():
            tensors[f"{s.task}.{part}.features"], tensors[f"{s.task}.{part}.targets"] = feats, targets
    meta = {"dim": trajectory.dim, "bounds": trajectory.bounds, "losses": [s.losses for s in trajectory.steps],
            "parts": [sorted(s.features) for s in trajectory.steps]}
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, meta


def from_tensors(tensors: dict[str, torch.Tensor], meta: dict) -> Trajectory:
    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    trajectory = Trajectory(part("theta0."), meta["dim"], [tuple(b) for b in meta["bounds"]])
    for t, (losses, parts) in enumerate(zip(meta["losses"], meta["parts"])):
        features = {p: (tensors[f"{t}.{p}.features"], tensors[f"{t}.{p}.targets"]) for p in parts}
        trajectory.steps.append(TaskStep(t, part(f"{t}.adapter."), part(f"{t}.merged."), tensors[f"{t}.head.weight"],
                                         part(f"{t}.statistics."), list(losses), features))
    return trajectory


def tensor_views(data: bytearray) -> dict[str, torch.Tensor] | None:
    """A safetensors file's tensors as views of its bytes (`safetensors.torch.load` copies each one: a second
    trajectory in memory while it loads); None when the layout does not parse. The layout: an 8-byte little-endian
    header size, a JSON header of {name: {dtype, shape, data_offsets}}, the data (ordered so that each tensor is
    aligned to its dtype)."""
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(bytes(data[8: 8 + size]))
        header.pop("__metadata__", None)
        tensors = {}
        for name, spec in header.items():
            dtype, (begin, end) = DTYPES[spec["dtype"]], spec["data_offsets"]
            count, offset = (end - begin) // dtype.itemsize, 8 + size + begin
            flat = torch.frombuffer(data, dtype=dtype, count=count, offset=offset) if count else \
                torch.empty(0, dtype=dtype)
            tensors[name] = flat.reshape(spec["shape"])
        return tensors
    except (ValueError, KeyError, TypeError, RuntimeError):
        return None


class TrajectoryCache:
    def __init__(self, uri: str):
        """`uri`: a local folder (created on first write) or an object-store URI such as s3://bucket/prefix."""
        if "://" not in uri:
            uri = str(Path(uri).resolve())
        self.filesystem, self.root = pafs.FileSystem.from_uri(uri)
        self.local = isinstance(self.filesystem, pafs.LocalFileSystem)
        self.uri = uri

    def _path(self, fingerprint: str, name: str) -> str:
        return f"{self.root.rstrip('/')}/{fingerprint}/{name}"

    def _read(self, path: str) -> bytes | None:
        try:
            with self.filesystem.open_input_stream(path) as stream:
                return stream.read()
        except (FileNotFoundError, OSError):
            return None

    def _write(self, path: str, data: bytes) -> None:
        self.filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        target = f"{path}.tmp-{uuid.uuid4().hex}" if self.local else path
        with self.filesystem.open_output_stream(target) as stream:
            stream.write(data)
        if self.local:
            self.filesystem.move(target, path)  # rename: the final name holds a whole file or nothing

    def _manifest(self, fingerprint: str) -> dict | None:
        """The entry's manifest, or None when there is none or it is torn, foreign or of another format."""
        raw = self._read(self._path(fingerprint, MANIFEST))
        if raw is None:
            return None
        try:
            manifest = json.loads(raw)
            if (manifest["format"], manifest["fingerprint"]) == (FORMAT, fingerprint) and \
                    {"sha256", "bytes", "meta"} <= manifest.keys():
                return manifest
        except (ValueError, TypeError, KeyError):
            pass
        print(f"trajectory cache: {fingerprint} has an unreadable manifest; recomputing", flush=True)
        return None

    def entries(self) -> set[str]:
        """Fingerprints of the entries with a readable manifest (what a sweep takes instead of training)."""
        found = self.filesystem.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return {f.base_name for f in found if f.type == pafs.FileType.Directory and self._manifest(f.base_name)}

    def _read_verified(self, path: str, size: int, sha256: str) -> bytearray | None:
        """The file's `size` bytes in one buffer, hashed as they arrive; None when it is missing, of another size or
        fails the checksum."""
        buffer, digest, done = bytearray(size), hashlib.sha256(), 0
        view = memoryview(buffer)
        try:
            with self.filesystem.open_input_stream(path) as stream:
                while done < size and (n := stream.readinto(view[done: done + CHUNK])):
                    digest.update(view[done: done + n])
                    done += n
                longer = done == size and stream.read(1) != b""
        except (FileNotFoundError, OSError):
            return None
        return buffer if done == size and not longer and digest.hexdigest() == sha256 else None

    def load(self, fingerprint: str) -> Trajectory | None:
        """The entry, or None when it is absent, partial or corrupt (any of which means: compute it again)."""
        manifest = self._manifest(fingerprint)
        if manifest is None:
            return None
        data = self._read_verified(self._path(fingerprint, DATA), manifest["bytes"], manifest["sha256"])
        tensors = None if data is None else tensor_views(data)
        if tensors is None:
            print(f"trajectory cache: {fingerprint} fails its checksum (partial or corrupt); recomputing", flush=True)
            return None
        return from_tensors(tensors, manifest["meta"])

    def store(self, fingerprint: str, trajectory: Trajectory, keys: dict | None = None) -> None:
        tensors, meta = to_tensors(trajectory)
        data = save_tensors(tensors)
        self._write(self._path(fingerprint, DATA), data)
        manifest = {"format": FORMAT, "fingerprint": fingerprint, "sha256": hashlib.sha256(data).hexdigest(),
                    "bytes": len(data), "meta": meta, "keys": keys or {}, "written": time.time()}
        self._write(self._path(fingerprint, MANIFEST), json.dumps(manifest, default=str).encode())


class Claims(Protocol):
    """Who computes a trajectory that several trials need: `claim` is true for exactly one caller until `release`."""

    def claim(self, fingerprint: str) -> bool: ...

    def release(self, fingerprint: str) -> None: ...


def obtain(cfg: ExperimentConfig, cache: TrajectoryCache, compute: Callable[[ExperimentConfig], Trajectory],
           claims: Claims | None = None, poll_s: float = 2.0) -> tuple[Trajectory, bool]:
    """(trajectory, came from the cache): the cached entry, else computed once and stored. With `claims`, a caller
    that finds the trajectory being computed by another waits for its entry instead of training it too."""
    fingerprint = trajectory_fingerprint(cfg)
    while True:
        found = cache.load(fingerprint)
        if found is not None:
            return found, True
        if claims is None or claims.claim(fingerprint):
            break
        time.sleep(poll_s)
    try:
        if claims is not None and (found := cache.load(fingerprint)) is not None:  # stored while we polled
            return found, True
        trajectory = compute(cfg)
        cache.store(fingerprint, trajectory, trajectory_keys(cfg))
    finally:
        if claims is not None:
            claims.release(fingerprint)
    return trajectory, False
