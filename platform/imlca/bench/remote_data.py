"""What a new node pays before its first trial when the data root is in an object store: raw JPEGs (download, then
decode into the node's image cache, `data.pipeline: cached`) vs the decoded uint8 cache itself (download only).

`python -m imlca.bench.remote_data --to s3://BUCKET/PREFIX [--images N]`, endpoint and credentials from the
environment (AWS_ENDPOINT_URL, ...). The data: a generated ImageFolder of photo-sized JPEGs (as `loader`'s:
400–500 × 300–375, quality 90, 8 classes, 80% train), pushed with `imlca data push`'s code; each side then runs on
a fresh cache folder, as a new node does. Seconds and bytes per image are extrapolated to ImageNet-R's 30,000.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from imlca.bench.loader_speed import jpeg_tree
from imlca.data.image_cache import open_cache
from imlca.data.object_store import push, push_folder, read_manifest
from imlca.data.paper import load_image_folder
from imlca.data.remote import Download, materialise

SIZE, CLASSES, IMAGENET_R = 224, 8, 30_000


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


def decode_parts(root: Path, cache: Path, threads: int) -> list[Path]:
    train, test = load_image_folder(root, "imagefolder", "an ImageFolder tree")
    return [open_cache(part, SIZE, cache, threads).folder for part in (train, test)]


def line(name: str, count: int, nbytes: int, seconds: float) -> dict:
    scale = IMAGENET_R / count
    return {"path": name, "images": count, "MB": round(nbytes / 1e6, 1), "s": round(seconds, 2),
            "MB/s": round(nbytes / 1e6 / seconds, 1), "imagenet_r_GB": round(nbytes * scale / 1e9, 2),
            "imagenet_r_s": round(seconds * scale)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", required=True, help="an s3:// or gs:// prefix to write under")
    parser.add_argument("--images", type=int, default=800)
    args = parser.parse_args(argv)
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = imagefolder(tmp / "src", args.images)
        count = sum(1 for _ in source.rglob("*.jpg"))
        push("imagefolder", source, f"{args.to}/raw")
        start = time.perf_counter()
        local, fetched = materialise(f"{args.to}/raw", "imagefolder", str(tmp / "node_a"))
        downloaded = time.perf_counter() - start
        decode_parts(local, tmp / "node_a" / "images", threads)
        raw = line("raw JPEGs: download + decode", count, fetched, time.perf_counter() - start)
        download = line("  of which the download", count, fetched, downloaded)

        for folder in decode_parts(source, tmp / "built", threads):  # what a push of the decoded cache would hold
            push_folder(folder, f"{args.to}/decoded/{folder.name}")
        start, nbytes = time.perf_counter(), 0
        for folder in sorted((tmp / "built").iterdir()):
            if folder.is_dir():
                uri = f"{args.to}/decoded/{folder.name}"
                manifest, _ = read_manifest(uri)
                node = tmp / "node_b"
                nbytes += Download(uri, manifest, node / folder.name, node / f"{folder.name}.state").run()
        decoded = line("decoded uint8 cache: download", count, nbytes, time.perf_counter() - start)
    rows = [raw, download, decoded]
    for row in rows:
        print(row, flush=True)
    print(f"threads={threads} load={os.getloadavg()}")
    return rows


if __name__ == "__main__":
    main()
