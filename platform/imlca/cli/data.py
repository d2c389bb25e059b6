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
    pull = sub.add_parser("pull", help="copy BENCHMARK onto this node's cache now (trials do it on first use)")
    pull.add_argument("benchmark")
    pull.add_argument("--from", dest="source", required=True, help="the data root in the bucket")
    pull.add_argument("--cache-dir", help="as data.cache_dir: the copy goes to CACHE_DIR/data "
                      "(default: $IMLCA_CACHE/data, else ~/.cache/imlca/data)")


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
    start = time.perf_counter()
    if args.action == "push":
        from imlca.data.object_store import push

        files = push(args.benchmark, Path(args.root), uri)["files"]
        size = sum(entry[0] for entry in files.values())
        print(f"pushed {args.benchmark}: {len(files)} files, {size} bytes to {uri} in "
              f"{time.perf_counter() - start:.1f} s")
        return 0
    from imlca.data.remote import materialise

    local, fetched = materialise(uri, args.benchmark, args.cache_dir)
    print(f"{args.benchmark} at {local}: {fetched} bytes downloaded in {time.perf_counter() - start:.1f} s")
    return 0
