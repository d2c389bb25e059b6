"""`remote_data`: what a new node pays before its first trial when the data root is in an object store, as the data
path runs it with `data.pipeline: cached`: the JPEGs (download, then decode into the node's image cache) / the
decoded copy `imlca data push --decoded` stored beside them (`data.remote_decoded: true`: download only).

Against moto's S3 server (`moto_server`, installed with the test extra) started on a free loopback port for the
row, so both sides pay the same per-request cost. The data: a generated ImageFolder of photo-sized JPEGs (as
`loader`'s: 400–500 × 300–375, quality 90, 8 classes, 80% train) pushed with `imlca data push --decoded`'s code at
224 px. Each round runs both sides on fresh cache folders, as a new node does; decoding uses every CPU of this
machine (a node decodes with its trial's CPUs). Seconds and bytes are also scaled to ImageNet-R's 30,000 images.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from imlca.bench.loader_speed import jpeg_tree
from imlca.bench.measure import Measurement, Samples, Settings, divide, medians, per_round, rounds, wall
from imlca.config import DataConfig

SIZE, CLASSES, IMAGENET_R = 224, 8, 30_000
SERVER = Path(sys.executable).parent / "moto_server"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def imagefolder(root: Path, count: int) -> Path:
    """`count` JPEGs split over CLASSES class folders, 80% under train/, the rest under test/."""
    for k in range(CLASSES):
        (root / "all" / f"class{k}").mkdir(parents=True)
        images = jpeg_tree(root / "all" / f"class{k}", count // CLASSES, seed=k)
        for i, path in enumerate(images.paths):
            part = "train" if i < 0.8 * len(images.paths) else "test"
            (root / part / f"class{k}").mkdir(parents=True, exist_ok=True)
            os.replace(path, root / part / f"class{k}" / Path(path).name)
    return root


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@contextmanager
def loopback_s3(folder: Path) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with bucket `bench`, this process's environment pointed at it; → s3://bench."""
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint, saved = f"http://127.0.0.1:{port}", dict(os.environ)
    with open(folder / "moto.log", "wb") as log:
        server = subprocess.Popen([str(SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _answers(f"{endpoint}/moto-api/"):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start: {(folder / 'moto.log').read_text()[-500:]}")
            time.sleep(0.3)
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/bench", method="PUT"), timeout=10).close()
        os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=endpoint)
        yield "s3://bench"
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.terminate()  # our own child, by its pid
        server.wait(timeout=30)


def node_start(cfg: DataConfig, threads: int):
    """What a trial's node does before training: the benchmark's parts in its image cache (→ the caches)."""
    from imlca.data import load_benchmark
    from imlca.data.image_cache import cache_root, open_cache
    from imlca.data.transforms import eval_resize

    benchmark = load_benchmark(cfg, seed=0)
    return [open_cache(part, eval_resize(cfg), cache_root(cfg.cache_dir), threads)
            for part in (benchmark.train, benchmark.test)]


def remote_figures(samples: Samples) -> tuple[list[float], dict[str, float]]:
    """Per round, jpegs / decoded: the figure held to the goal; its median beside."""
    figures = per_round(samples, lambda t: divide(t["jpegs"], t["decoded"]))
    return figures, {"jpegs_vs_decoded": statistics.median(figures)}


def bench_remote_data(settings: Settings) -> Measurement:
    if not SERVER.exists():
        return Measurement([], skipped=f"no {SERVER.name} beside {sys.executable}: pip install 'moto[server]'")
    from imlca.data.object_store import push
    from imlca.data.remote_decoded import push_decoded

    count, repeats = (160, 2) if settings.quick else (800, 3)
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="imlca-bench-remote-") as tmp, loopback_s3(Path(tmp)) as bucket:
        tmp, state = Path(tmp), {"node": 0}
        source = imagefolder(tmp / "src", count)
        base = DataConfig(benchmark="imagefolder", root=f"{bucket}/data", image_size=SIZE, pipeline="cached",
                          task_sizes=[CLASSES // 2, CLASSES - CLASSES // 2], cache_dir=str(tmp / "push"))
        jpeg_bytes = sum(entry[0] for entry in push("imagefolder", source, base.root)["files"].values())
        _, manifest = push_decoded(base, source, base.root, threads)
        decoded_bytes = sum(entry[0] for entry in manifest["files"].values())
        caches = {}

        def side(name: str, decoded: bool):
            def run() -> None:
                state["node"] += 1  # a new node: nothing cached yet
                cfg = dataclasses.replace(base, cache_dir=str(tmp / f"node{state['node']}"), remote_decoded=decoded)
                with contextlib.redirect_stdout(io.StringIO()):  # the data path's "copied ..." lines
                    caches[name] = node_start(cfg, threads)
            return wall(name, run)

        samples = rounds([side("jpegs", False), side("decoded", True)], repeats)
        same = all(np.array_equal(a.batch(range(len(a)))[0], b.batch(range(len(b)))[0])
                   for a, b in zip(caches["jpegs"], caches["decoded"]))
    figures, ratios = remote_figures(samples)
    timings, scale = medians(samples), IMAGENET_R / count
    details = {"images": count, "image_size": SIZE, "decode_threads": threads, "repeats": repeats,
               "jpeg_mb": jpeg_bytes / 1e6, "decoded_mb": decoded_bytes / 1e6,
               "imagenet_r_s": {name: seconds * scale for name, seconds in timings.items()},
               "load_average": os.getloadavg()}
    note = (f"{count} photo-sized JPEGs ({jpeg_bytes / 1e6:.1f} MB) → {SIZE} px, loopback moto S3, {threads} decode "
            f"threads: JPEG path {timings['jpegs']:.2f} s, decoded copy ({decoded_bytes / 1e6:.1f} MB) "
            f"{timings['decoded']:.2f} s; ImageNet-R scale ≈ {timings['jpegs'] * scale:.0f} s vs "
            f"{timings['decoded'] * scale:.0f} s")
    return Measurement(figures, timings, ratios, checks={"the decoded copy's pixels = decoding the JPEGs": same},
                       details=details, note=note)
