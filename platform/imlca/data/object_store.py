"""Benchmarks kept in an object store (`s3://bucket/prefix`, `gs://bucket/prefix`), through `pyarrow.fs`, no Ray.

The bucket holds a benchmark exactly as a local data root does (`<root>/<folder>/...`, the folder being the one
the benchmark's loader reads: `imagenet-r`, `cifar-100-python`, ... or none for `imagefolder`), plus a manifest
beside the data, `<root>/<folder>/imlca-manifest.json`:
`{"format": 1, "benchmark": NAME, "files": {"train/cls/a.jpg": [size, sha256 hex], ...}}`.
`push` uploads the files first and the manifest last: a PUT of one object is atomic, so a manifest in the bucket
always describes files that are all there. Endpoints and credentials come from the environment (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, an instance profile, a service account), never from a config file.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from pyarrow import fs as pafs

from imlca.errors import DataError
from imlca.registries import BENCHMARKS, resolve
from imlca.safe_paths import check_files

MANIFEST, FORMAT = "imlca-manifest.json", 1
BUILT_IN = ("imlca.data.embedded:", "imlca.data.synthetic:")  # benchmarks that read no data root
CHUNK = 1 << 23  # bytes per read and per hash update
THREADS = 16  # concurrent transfers: object stores answer each request after a round trip, not at disk speed
PUSH_FIX = "upload it with `imlca data push BENCHMARK --root LOCAL --to URI`"
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                   "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                   "GOOGLE_APPLICATION_CREDENTIALS")


def is_uri(root: str) -> bool:
    return "://" in root and not root.startswith("file://")


def benchmark_folder(benchmark: str) -> str:
    """The folder under the data root that `benchmark` reads ('' when it reads the root itself)."""
    spec = BENCHMARKS[benchmark]
    if spec.target.startswith(BUILT_IN):
        raise DataError(f"benchmark '{benchmark}' is built in and reads no data root; nothing to push or pull")
    return spec.folder or ""


def benchmark_uri(root: str, benchmark: str) -> str:
    """Where `benchmark`'s folder (and its manifest) lies under the data root URI `root`."""
    folder = benchmark_folder(benchmark)
    return f"{root.rstrip('/')}/{folder}" if folder else root.rstrip("/")


def join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def _has_credentials() -> bool:
    return any(os.environ.get(v) for v in CREDENTIAL_VARS) or (Path.home() / ".aws" / "credentials").exists()


def explain(uri: str, err: OSError) -> DataError:
    """A pyarrow object-store error as one line naming the cause and the fix."""
    detail = " ".join(str(err).split())[:200]
    if "NETWORK_CONNECTION" in detail or "curlCode" in detail or "Could not resolve" in detail:
        return DataError(f"cannot reach the object store holding {uri} ({detail}); check the endpoint "
                         "(AWS_ENDPOINT_URL) and this node's network, or fix data.root / IMLCA_DATA")
    if not _has_credentials():
        return DataError(f"cannot read {uri} and this node has no object-store credentials ({detail}); set "
                         "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or GOOGLE_APPLICATION_CREDENTIALS), or give "
                         "the node an instance profile / service account that may read the bucket")
    if "ACCESS_DENIED" in detail or "403" in detail:
        return DataError(f"access to {uri} denied ({detail}); give this node's credentials read access "
                         "(s3:GetObject, s3:ListBucket) to the bucket, or fix data.root / IMLCA_DATA")
    return DataError(f"cannot read {uri} ({detail}); check data.root / IMLCA_DATA and the node's credentials")


@contextmanager
def translated(uri: str, fix: str = PUSH_FIX):
    """Object-store errors (pyarrow raises OSError) inside the block become one-line DataErrors."""
    try:
        yield
    except DataError:
        raise
    except FileNotFoundError as err:
        raise DataError(f"{uri}: {err}; {fix}") from None
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):  # this node's disk, not the store: the caller says so
            raise
        raise explain(uri, err) from None


def open_store(uri: str) -> tuple[pafs.FileSystem, str]:
    with translated(uri):
        try:
            return pafs.FileSystem.from_uri(uri)
        except (ValueError, pafs.ArrowInvalid) as err:  # pyarrow.lib.ArrowInvalid subclasses ValueError
            raise DataError(f"{uri} is not an object-store URI pyarrow can open ({err}); give "
                            "s3://bucket/prefix or gs://bucket/prefix") from None


def read_manifest(uri: str, fix: str = PUSH_FIX) -> tuple[dict, str]:
    """(manifest, SHA-256 of its text) of the benchmark stored at `uri` (the root joined with its folder, or its
    decoded copy's folder); every entry of its `files` checked (safe_paths.check_files), a DataError naming the
    first bad one and `fix`."""
    filesystem, base = open_store(uri)
    where = f"{uri.rstrip('/')}/{MANIFEST}"
    with translated(uri):
        if filesystem.get_file_info(join(base, MANIFEST)).type != pafs.FileType.File:
            bucket = base.split("/", 1)[0]
            if filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise DataError(f"bucket '{bucket}' of {uri} does not exist; create it, or fix data.root / "
                                "IMLCA_DATA")
            raise DataError(f"no benchmark manifest at {where}; {fix}")
        with filesystem.open_input_stream(join(base, MANIFEST)) as stream:
            text = stream.read()
    try:
        manifest = json.loads(text)
        valid = manifest["format"] == FORMAT and all(len(v) == 2 for v in manifest["files"].values())
    except (ValueError, KeyError, TypeError, AttributeError):
        valid = False
    if not valid:
        raise DataError(f"{where} is not an imlca manifest (format {FORMAT}); {fix}")
    manifest["files"] = check_files(manifest["files"], where, fix)  # before any name becomes a local path
    return manifest, hashlib.sha256(text).hexdigest()


def local_files(folder: Path) -> list[str]:
    """Every non-hidden file under `folder`, relative, '/'-separated, sorted."""
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            found.append(rel.as_posix())
    return found


def file_digest(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _upload(filesystem: pafs.FileSystem, source: Path, target: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as f, filesystem.open_output_stream(target) as out:
        while block := f.read(CHUNK):
            digest.update(block)
            out.write(block)
            size += len(block)
    return size, digest.hexdigest()


def push_folder(source: Path, target: str, **about) -> dict:
    """Upload every non-hidden file under `source` to the URI `target`, then its manifest (with `about`)."""
    return push_files({name: source / name for name in local_files(source)}, target, **about)


def push_files(files: dict[str, Path], target: str, **about) -> dict:
    """Upload each local file to `target`/name, then the manifest of them all (with `about`)."""
    names = sorted(files)
    filesystem, base = open_store(target)
    with translated(target), ThreadPoolExecutor(THREADS) as pool:
        filesystem.create_dir(base, recursive=True)
        sums = list(pool.map(lambda n: _upload(filesystem, files[n], join(base, n)), names))
        manifest = {"format": FORMAT, **about, "files": dict(zip(names, map(list, sums)))}
        with filesystem.open_output_stream(join(base, MANIFEST)) as out:
            out.write(json.dumps(manifest, indent=0, sort_keys=True).encode())
    return manifest


def push(benchmark: str, root: Path, to: str) -> dict:
    """Upload `benchmark` from the local data root `root` to the data root `to` (URI), manifest last."""
    from imlca.config import DataConfig

    folder = benchmark_folder(benchmark)
    resolve(BENCHMARKS[benchmark].target)(DataConfig(benchmark=benchmark, root=str(root)))  # the layout is whole
    return push_folder(root.expanduser() / folder, benchmark_uri(to, benchmark), benchmark=benchmark)
