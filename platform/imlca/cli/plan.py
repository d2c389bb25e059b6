"""`imlca plan SWEEP.yaml [--cluster CFG] [--probe] [--price TYPE=USD] [--json]`: what a sweep will cost.

Starts no cluster and trains nothing beyond the probe. Without `--cluster`, the cluster is this machine as local
Ray sees it.
"""
from __future__ import annotations

import argparse
import json
import sys

HELP = "trials, wall time, GPU-hours and price of a sweep on a cluster config, before launching it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep YAML, e.g. sweeps/paper/table1.yaml")
    p.add_argument("--cluster", metavar="CFG", help="Ray launcher config or KubeRay manifest, e.g. cluster/aws.yaml "
                                                   "(default: this machine, as local Ray sees it)")
    p.add_argument("--probe", action="store_true",
                   help="measure the missing figures on this machine's device first (a few training steps, one "
                        "alignment, Ray/Tune start-up), stored in $IMLCA_PLAN_PROBES or "
                        "~/.cache/imlca/plan-probes.json")
    p.add_argument("--price", action="append", default=[], metavar="TYPE=USD",
                   help="price of one node of a worker type per hour (repeatable); overrides the config's "
                        "imlca.io/usd-per-hour label")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def local_device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def cached_entries(sweep) -> set[str]:
    """Fingerprints of the trajectories already in a cached sweep's cache."""
    if not sweep.cfg.cached:
        return set()
    from imlca.engine.trajectory_cache import TrajectoryCache
    from imlca.orchestration.storage import storage_root

    return TrajectoryCache(sweep.cfg.cache_location(storage_root(sweep.cfg.storage_path))).entries()


def execute(args: argparse.Namespace) -> int:
    from imlca.config.sweep import load_sweep
    from imlca.planning.clusters import apply_prices, local_cluster, read_cluster
    from imlca.planning.figures import Device, Figures
    from imlca.planning.plan import MissingFigureError, make_plan
    from imlca.planning.render import as_json, text, work_lines
    from imlca.planning.workload import workload

    sweep = load_sweep(args.sweep)
    if args.cluster:
        cluster = read_cluster(args.cluster)
    else:
        from imlca.orchestration.cluster import local_node

        cluster = local_cluster(local_node(), local_device())
    apply_prices(cluster, args.price)
    work = workload(sweep, cached_entries(sweep))
    figures = Figures()
    if args.probe:
        from imlca.config import ExperimentConfig, from_dict
        from imlca.orchestration.cluster import local_node
        from imlca.planning.plan import local_parallel
        from imlca.planning.probe import run_probe

        threads = max(1, int(from_dict(ExperimentConfig, sweep.base_tree).resources.num_cpus))
        at_once = local_parallel(work, local_node()) if cluster.local else 1
        run_probe(work, Device(local_device(), threads, at_once), figures,
                  say=lambda line: print(line, file=sys.stderr))
    try:
        plan = make_plan(work, cluster, figures, local_device())
    except MissingFigureError as err:  # the work it did count first, then the figure it lacks (stderr)
        if not args.json:
            print("\n".join(work_lines(work, err.trial)), flush=True)
        raise
    print(json.dumps(as_json(plan), indent=1) if args.json else text(plan))
    return 0
