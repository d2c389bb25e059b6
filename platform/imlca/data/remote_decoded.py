"""The decoded-image cache in the bucket: `imlca data push NAME --decoded` stores the cached pipeline's uint8 images
beside the JPEGs, and a node with `data.remote_decoded: true` fetches them instead of downloading and decoding the
JPEGs.

Layout, under the benchmark's folder in the bucket (where its JPEGs and their manifest are):
`imlca-decoded/<size>-<interpolation>/{train,test}/{pixels.u8,index.npy,meta.json,labels.npy}` (the local cache's
folder of each full part, as `imlca.data.image_cache` writes it, plus its labels) and, uploaded last, that folder's
`imlca-manifest.json`: `{"format": 1, "kind": "decoded", "benchmark", "jpegs": SHA-256 of the JPEG manifest,
"size", "interpolation", "version", "files": {name: [size, sha256]}}`. The copy is named by what decides its
pixels (the storage size and interpolation) and bound to the JPEGs it was decoded from by their manifest's hash,
not by local paths or mtimes, which differ per node: a JPEG re-push makes a decoded copy left from before stale,
and it is refused. The fetch is the JPEGs' (`imlca.data.remote.copy_once`: size + SHA-256 per file, lock,
resumable, marker last), and each part's meta and index are checked against the manifest before the marker.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from pyarrow import fs as pafs

from imlca.config import DataConfig
from imlca.data.image_cache import VERSION, DecodedImages, DecodedImageSet, cache_root, open_cache
from imlca.data.object_store import (BUILT_IN, MANIFEST, benchmark_uri, join, open_store, push_files, read_manifest,
                                     translated)
from imlca.data.remote import copy_once, remote_root
from imlca.data.transforms import eval_resize
from imlca.errors import ConfigError, DataError
from imlca.registries import BENCHMARKS, resolve

DECODED = "imlca-decoded"
PARTS = ("train", "test")  # the loader's full parts; caps and the validation split are views of them
FILES = ("pixels.u8", "index.npy", "meta.json", "labels.npy")


def fix(benchmark: str) -> str:
    return (f"push it again with `imlca data push {benchmark} --root LOCAL --to URI --decoded`, or set "
            "data.remote_decoded: false")


def resolution(cfg: DataConfig) -> tuple[int, str]:
    """(storage size, interpolation) of the cached pipeline's images for `cfg`."""
    return eval_resize(cfg), cfg.eval_interpolation


def decoded_uri(jpegs_uri: str, size: int, interpolation: str) -> str:
    return f"{jpegs_uri.rstrip('/')}/{DECODED}/{size}-{interpolation}"


def push_decoded(data: DataConfig, root: Path, to: str, threads: int) -> tuple[str, dict]:
    """Decode the benchmark under the local data root `root` at `data`'s resolution (into this machine's image
    cache, reused when already there) and upload it beside its JPEGs under `to`, which must hold them already."""
    data = dataclasses.replace(data, root=str(root))
    jpegs_uri = benchmark_uri(to, data.benchmark)
    _, jpegs = read_manifest(jpegs_uri)
    size, interpolation = resolution(data)
    parts = dict(zip(PARTS, resolve(BENCHMARKS[data.benchmark].target)(data)))
    files: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for part, images in parts.items():
            folder = open_cache(images, size, cache_root(data.cache_dir), threads, interpolation).folder
            np.save(Path(tmp) / f"{part}.npy", images.labels)
            files.update({f"{part}/{name}": folder / name for name in FILES[:3]})
            files[f"{part}/labels.npy"] = Path(tmp) / f"{part}.npy"
        uri = decoded_uri(jpegs_uri, size, interpolation)
        return uri, push_files(files, uri, kind="decoded", benchmark=data.benchmark, jpegs=jpegs, size=size,
                               interpolation=interpolation, version=VERSION)


def _stored_resolutions(jpegs_uri: str) -> list[str]:
    filesystem, base = open_store(jpegs_uri)
    with translated(jpegs_uri):
        found = filesystem.get_file_info(pafs.FileSelector(join(base, DECODED), allow_not_found=True))
    return sorted(info.base_name for info in found if info.type == pafs.FileType.Directory)


def decoded_copy(cfg: DataConfig) -> tuple[str, dict, str] | None:
    """(URI, manifest, its SHA-256) of the decoded copy `cfg`'s node should fetch; None, after one line saying why,
    where there is none at this resolution (the node reads the JPEGs). A copy of another benchmark, resolution or
    JPEG manifest than it claims to be is refused (DataError)."""
    jpegs_uri = benchmark_uri(remote_root(cfg), cfg.benchmark)
    _, jpegs = read_manifest(jpegs_uri)
    size, interpolation = resolution(cfg)
    uri = decoded_uri(jpegs_uri, size, interpolation)
    filesystem, base = open_store(uri)
    with translated(uri):
        stored = filesystem.get_file_info(join(base, MANIFEST)).type == pafs.FileType.File
    if not stored:
        others = _stored_resolutions(jpegs_uri)
        why = (f"its decoded copies are for {', '.join(others)} (size-interpolation), not the {size}-{interpolation}"
               " this config needs" if others else "it holds no decoded copy")
        print(f"{cfg.benchmark}: reading the JPEGs of {jpegs_uri}: {why}; `imlca data push {cfg.benchmark} --root "
              "LOCAL --to URI --decoded --config THIS_CONFIG` stores one", flush=True)
        return None
    manifest, digest = read_manifest(uri, fix(cfg.benchmark))
    where = f"the decoded copy at {uri}"
    if manifest.get("kind") != "decoded" or manifest.get("benchmark") != cfg.benchmark:
        raise DataError(f"{where} was made for benchmark '{manifest.get('benchmark')}', not '{cfg.benchmark}'; "
                        f"{fix(cfg.benchmark)}")
    if (manifest.get("size"), manifest.get("interpolation")) != (size, interpolation):
        raise DataError(f"{where} was made for {manifest.get('size')} px {manifest.get('interpolation')}, not the "
                        f"{size} px {interpolation} its folder says; {fix(cfg.benchmark)}")
    if manifest.get("jpegs") != jpegs:
        raise DataError(f"{where} is stale: it was decoded from other JPEGs than {jpegs_uri} holds now (their "
                        f"manifest's sha256 {str(manifest.get('jpegs'))[:12]}…, now {jpegs[:12]}…); "
                        f"{fix(cfg.benchmark)}")
    expected = {f"{part}/{name}" for part in PARTS for name in FILES}
    if manifest.get("version") != VERSION or set(manifest["files"]) != expected:
        raise DataError(f"{where} is incomplete or of another layout (version {manifest.get('version')}, "
                        f"{len(manifest['files'])} files; expected version {VERSION}, {', '.join(sorted(expected))}"
                        f"); {fix(cfg.benchmark)}")
    return uri, manifest, digest


def check_part(folder: Path, manifest: dict, where: str, fix_text: str) -> None:
    """The fetched part in `folder` is what the manifest says (resolution, layout) and its index stays inside its
    pixels, so a reader never maps past the file."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        index, labels = np.load(folder / "index.npy"), np.load(folder / "labels.npy")
        made = (meta["version"], meta["size"], meta.get("interpolation", "bilinear"))
        count, nbytes = int(meta["count"]), int(meta["bytes"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{where}: {folder.name}/ is not a decoded cache ({err}); {fix_text}") from None
    wanted = (manifest["version"], manifest["size"], manifest["interpolation"])
    if made != wanted:
        raise DataError(f"{where}: {folder.name}/ was made for {made[1]} px {made[2]} (layout {made[0]}), not the "
                        f"{wanted[1]} px {wanted[2]} (layout {wanted[0]}) its manifest says; {fix_text}")
    ends = index[:, 0] + 3 * index[:, 1] * index[:, 2] if index.ndim == 2 and index.shape[1:] == (3,) else None
    if (ends is None or index.dtype != np.int64 or labels.dtype != np.int64 or labels.shape != (count,)
            or len(index) != count or (count and (index.min() < 0 or ends.max() > nbytes or labels.min() < 0))
            or os.path.getsize(folder / "pixels.u8") != nbytes):
        raise DataError(f"{where}: {folder.name}/'s index, labels and pixels do not agree ({len(index)} index rows, "
                        f"{labels.shape} labels, {count} images); {fix_text}")


def fetch_decoded(cfg: DataConfig) -> tuple[DecodedImageSet, DecodedImageSet] | None:
    """(train, test) from the bucket's decoded copy, fetched once per node; None where the node reads the JPEGs
    (no decoded copy at this resolution: one line says so). Without a bucket data root there is nothing to fetch:
    refused (ConfigError)."""
    if remote_root(cfg) is None:
        root = cfg.root or os.environ.get("IMLCA_DATA")
        held = "built in" if BENCHMARKS[cfg.benchmark].target.startswith(BUILT_IN) else f"at {root or 'no data root'}"
        raise ConfigError("data.remote_decoded", f"fetches decoded images from an s3:// or gs:// data root, and "
                          f"benchmark '{cfg.benchmark}' is {held}; set data.root (or IMLCA_DATA) to the bucket's "
                          "data root, or data.remote_decoded: false")
    found = decoded_copy(cfg)
    if found is None:
        return None
    uri, manifest, digest = found
    where, fix_text = f"the decoded copy at {uri}", fix(cfg.benchmark)

    def check(local: Path) -> None:
        for part in PARTS:
            check_part(local / part, manifest, where, fix_text)

    local, fetched = copy_once(uri, manifest, digest, cfg.cache_dir, check=check, fix=fix_text)
    if fetched:
        print(f"{cfg.benchmark}: copied the decoded images ({fetched} bytes) from {uri} to {local} (once per node)",
              flush=True)
    return tuple(DecodedImageSet(DecodedImages(local / part), np.load(local / part / "labels.npy")) for part in PARTS)
