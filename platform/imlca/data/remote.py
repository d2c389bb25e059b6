"""A benchmark in an object store, materialised once per node into a local folder that every trial on it shares.

`<download root>/<key>/<folder>/...` mirrors the bucket's `<root>/<folder>/...` (key: a hash of the URI), and
the loaders read it as a local data root. Beside it:
- `<key>.lock`: held while a process checks or fills the copy, so two trials starting together download once
  (the second waits, then finds the copy complete);
- `<key>.done`: the SHA-256 of the manifest the copy matches, written last. Without it (or with another
  manifest's) nobody reads the copy: a killed or failed download leaves no half-filled data root behind;
- `<key>.verified`: one line `sha256 path` appended per file downloaded and verified (size and SHA-256 against
  the manifest), so a resumed download fetches only the rest. Files go to `<key>.partial/` first and are renamed
  into place once verified.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

from imlca.config import DataConfig
from imlca.data.object_store import (BUILT_IN, CHUNK, MANIFEST, PUSH_FIX, THREADS, benchmark_folder, benchmark_uri,
                                     is_uri, join, local_files, open_store, read_manifest, translated)
from imlca.errors import DataError
from imlca.registries import BENCHMARKS
from imlca.safe_paths import inside


def download_root(cache_dir: str | None) -> Path:
    """`<data.cache_dir>/data`, else `$IMLCA_CACHE/data`, else ~/.cache/imlca/data: this node's disk."""
    base = cache_dir or os.environ.get("IMLCA_CACHE")
    return Path(base).expanduser() / "data" if base else Path.home() / ".cache" / "imlca" / "data"


@contextmanager
def _locked(path: Path):
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when the process is killed
        yield


def _no_space(where: Path, need: int) -> DataError:
    return DataError(f"no space left on the device holding {where} for the download ({need / 1e6:.1f} MB to "
                     f"fetch, {shutil.disk_usage(where).free / 1e6:.1f} MB free); free space there or set "
                     "data.cache_dir (or IMLCA_CACHE) to a folder on a larger disk")


class Download:
    """Fetches the files of one manifest that the local copy lacks into `local`, verifying each."""

    def __init__(self, uri: str, manifest: dict, local: Path, state: Path, fix: str = PUSH_FIX):
        self.uri, self.files, self.local, self.fix = uri, manifest["files"], local, fix
        where = f"{uri.rstrip('/')}/{MANIFEST}"
        self.targets = {name: inside(local, name, where, fix) for name in self.files}  # before any write
        self.filesystem, self.base = open_store(uri)
        self.partial, self.log = state.with_suffix(".partial"), state.with_suffix(".verified")
        self.log_lock = threading.Lock()

    def verified(self) -> dict[str, str]:
        """path → sha256 of the files verified so far (a line cut short by a kill is ignored)."""
        if not self.log.exists():
            return {}
        entries = (line.split(" ", 1) for line in self.log.read_text().splitlines())
        return {e[1]: e[0] for e in entries if len(e) == 2 and len(e[0]) == 64}

    def missing(self) -> list[str]:
        done = self.verified()
        return [name for name, (size, sha) in self.files.items() if done.get(name) != sha
                or not self.targets[name].is_file() or self.targets[name].stat().st_size != size]

    def drop_stale(self) -> None:
        """Files of an earlier manifest that this one does not list (a loader would read them)."""
        if self.local.is_dir():
            for name in set(local_files(self.local)) - set(self.files):
                (self.local / name).unlink()

    def fetch(self, name: str) -> None:
        size, sha = self.files[name]
        part = self.partial / hashlib.sha256(name.encode()).hexdigest()[:32]
        digest, got = hashlib.sha256(), 0
        with translated(self.uri, self.fix), self.filesystem.open_input_stream(join(self.base, name)) as stream, \
                open(part, "wb") as out:
            while got <= size and (block := stream.read(min(CHUNK, size + 1 - got))):  # never past size + 1
                digest.update(block)
                out.write(block)
                got += len(block)
        if got > size:
            part.unlink()
            raise DataError(f"{self.uri}/{name} is larger than its manifest entry ({size} bytes; the download "
                            f"stopped at {got}); the bucket copy changed or is corrupt: {self.fix}")
        if (got, digest.hexdigest()) != (size, sha):
            part.unlink()
            raise DataError(f"{self.uri}/{name} does not match its manifest entry ({got} bytes, sha256 "
                            f"{digest.hexdigest()[:12]}…; expected {size} bytes, {sha[:12]}…); the bucket copy "
                            f"changed or is corrupt: {self.fix}")
        target = self.targets[name]
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, target)
        with self.log_lock, open(self.log, "a") as log:
            log.write(f"{sha} {name}\n")

    def run(self, threads: int = THREADS) -> int:
        """Download what is missing; → bytes fetched. Any failure stops every transfer and is raised."""
        todo = self.missing()
        need = sum(self.files[name][0] for name in todo)
        self.drop_stale()
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        try:
            if need > shutil.disk_usage(self.partial).free:
                raise _no_space(self.partial, need)
            with ThreadPoolExecutor(threads) as pool:
                futures = [pool.submit(self.fetch, name) for name in todo]
                try:
                    for future in as_completed(futures):
                        future.result()
                finally:
                    for future in futures:
                        future.cancel()
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _no_space(self.partial, need) from None
            raise
        finally:
            shutil.rmtree(self.partial, ignore_errors=True)
        return need


def remote_root(cfg: DataConfig) -> str | None:
    """The object-store URI `cfg`'s benchmark is read from; None for a folder or a built-in benchmark."""
    root = cfg.root or os.environ.get("IMLCA_DATA")
    built_in = BENCHMARKS[cfg.benchmark].target.startswith(BUILT_IN)
    return root if root and is_uri(root) and not built_in else None


def check_remote(cfg: DataConfig) -> None:
    """The driver's preflight for a benchmark in an object store: reachable, readable, manifest there. The
    trials' nodes copy the data themselves; the driver's node (a cluster's CPU head) need not."""
    read_manifest(benchmark_uri(remote_root(cfg), cfg.benchmark))


def materialise(root: str, benchmark: str, cache_dir: str | None) -> tuple[Path, int]:
    """(local data root holding `benchmark` as stored under the URI `root`, bytes downloaded now: 0 when this
    node already had it). Costs one GET of the manifest when the copy is complete."""
    uri = benchmark_uri(root, benchmark)
    manifest, digest = read_manifest(uri)
    return copy_once(uri, manifest, digest, cache_dir, benchmark_folder(benchmark))


def copy_once(uri: str, manifest: dict, digest: str, cache_dir: str | None, folder: str = "",
              check: Callable[[Path], None] | None = None, fix: str = PUSH_FIX) -> tuple[Path, int]:
    """(local copy of the files `manifest` lists under `uri`, in `<copy>/<folder>`; bytes downloaded now), once per
    node. `check(<copy>/<folder>)` runs on a fresh copy before its marker is written: what it raises leaves no
    copy anyone reads."""
    downloads = download_root(cache_dir)
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    local, state = downloads / key, downloads / f"{key}.done"
    try:
        downloads.mkdir(parents=True, exist_ok=True)
        with _locked(downloads / f"{key}.lock"):
            if state.exists() and state.read_text() == digest:
                return local, 0
            state.unlink(missing_ok=True)
            fetched = Download(uri, manifest, local / folder, state, fix).run()
            if check is not None:
                check(local / folder)
            tmp = state.with_suffix(".done-tmp")
            tmp.write_text(digest)
            os.replace(tmp, state)
    except OSError as err:  # the lock or the marker itself found the disk full
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _no_space(downloads, sum(size for size, _ in manifest["files"].values())) from None
        raise
    return local, fetched
