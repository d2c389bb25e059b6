"""`imlca data push|pull`: a benchmark to an object store for every cluster node, or from it onto this node."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "upload a local benchmark to s3:// or gs:// (push), or copy one onto this node (pull)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    push = sub.add_parser("push", help="upload BENCHMARK's files from a local data root, then its manifest")
    push.add_argument("benchmark", help="a registered benchmark (imlca benchmarks)")
    push.add_argument("--root", required=True, help="the local data root (what data.root would be)")
    push.add_argument("--to", required=True, help="the data root in the bucket, e.g. s3://BUCKET/imlca/data; "
                      "nodes then read it with data.root or IMLCA_DATA set to it")
    push.add_argument("--decoded", action="store_true", help="also upload the decoded uint8 images (the cached "
                      "pipeline's) at --config's resolution, for nodes with data.remote_decoded: true")
    push.add_argument("--config", help="with --decoded: the run config whose data section (image_size, "
                      "eval_resize_ratio, eval_interpolation) sets the resolution; default: the schema's")
    pull = sub.add_parser("pull", help="copy BENCHMARK onto this node's cache now (trials do it on first use)")
    pull.add_argument("benchmark")
    pull.add_argument("--from", dest="source", required=True, help="the data root in the bucket")
    pull.add_argument("--cache-dir", help="as data.cache_dir: the copy goes to CACHE_DIR/data "
                      "(default: $IMLCA_CACHE/data, else ~/.cache/imlca/data)")
    pull.add_argument("--decoded", action="store_true", help="copy the decoded images at --config's resolution "
                      "instead of the JPEGs (the JPEGs, saying so, where the bucket has none)")
    pull.add_argument("--config", help="with --decoded: the run config whose data section sets the resolution")


def _data_config(args: argparse.Namespace, root: str):
    """The data section of --config (the schema's defaults without one) for this benchmark and root."""
    import dataclasses

    from imlca.config import load_config

    data = load_config(args.config).data if args.config else load_config().data
    return dataclasses.replace(data, benchmark=args.benchmark, root=root, pipeline="cached", remote_decoded=True,
                               cache_dir=getattr(args, "cache_dir", None) or data.cache_dir)


def execute(args: argparse.Namespace) -> int:
    from imlca.data.object_store import is_uri
    from imlca.errors import ConfigError
    from imlca.registries import BENCHMARKS

    if args.benchmark not in BENCHMARKS:
        raise ConfigError("benchmark", f"unknown benchmark '{args.benchmark}'; choose one of "
                          f"{', '.join(sorted(BENCHMARKS))}")
    uri = args.to if args.action == "push" else args.source
    if not is_uri(uri):
        raise ConfigError("--to" if args.action == "push" else "--from",
                          f"'{uri}' is not an object-store URI; give s3://BUCKET/PREFIX or gs://BUCKET/PREFIX")
    if args.config and not args.decoded:
        raise ConfigError("--config", "is read with --decoded only (it sets the decoded images' resolution); add "
                          "--decoded or drop --config")
    start = time.perf_counter()
    if args.action == "push":
        from imlca.data.object_store import push

        files = push(args.benchmark, Path(args.root), uri)["files"]
        size = sum(entry[0] for entry in files.values())
        print(f"pushed {args.benchmark}: {len(files)} files, {size} bytes to {uri} in "
              f"{time.perf_counter() - start:.1f} s")
        return _push_decoded(args, uri) if args.decoded else 0
    if args.decoded:
        from imlca.data.remote_decoded import fetch_decoded

        if fetch_decoded(_data_config(args, uri)) is not None:
            print(f"{args.benchmark}: decoded images on this node after {time.perf_counter() - start:.1f} s")
            return 0
    from imlca.data.remote import materialise

    local, fetched = materialise(uri, args.benchmark, args.cache_dir)
    print(f"{args.benchmark} at {local}: {fetched} bytes downloaded in {time.perf_counter() - start:.1f} s")
    return 0


def _push_decoded(args: argparse.Namespace, uri: str) -> int:
    import os

    from imlca.data.remote_decoded import push_decoded

    start = time.perf_counter()
    data = _data_config(args, args.root)
    target, manifest = push_decoded(data, Path(args.root), uri, os.cpu_count() or 1)
    size = sum(entry[0] for entry in manifest["files"].values())
    print(f"pushed the decoded images of {args.benchmark} ({manifest['size']} px, {manifest['interpolation']}): "
          f"{len(manifest['files'])} files, {size} bytes to {target} in {time.perf_counter() - start:.1f} s")
    return 0
