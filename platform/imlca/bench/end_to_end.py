"""`end_to_end` and `task_overhead`: what the platform costs around a whole run.

One embedded-size run (the embedded default's model, Lite0 with LoRA r=8 at 64 px, on the synthetic images: 3
tasks of 8 epochs, about a minute; 3 epochs in `--quick`) through the platform, `run_distributed` (a TaskWorker
and a CentralActor, a checkpoint after every task, actor start-up included; the Ray cluster is up beforehand, as on a
warm cluster), against the same computation as a bare script: a new Python process running `run_protocol` without
checkpoints (the torch + peft loop with nothing around it), its interpreter start and imports included as the
actors' are, with as many torch threads as the TaskWorker holds CPUs. Both sides get the same cores: this process
pins itself to as many cores as the TaskWorker holds CPUs, then starts the Ray cluster and the bare processes,
which inherit that set (so the two actors share the cores the bare process has, as do Ray's own processes). The
sides alternate, REPEATS runs each; the accuracy matrices must agree.

- `end_to_end`: platform run time / bare run time, one value per round.
- `task_overhead`: per platform run, over its tasks after the first (the first one includes start-up), the time
  in which neither actor computed, as a fraction of the time in which one did: each task's window on the driver
  (from the previous task's report to its own) less the part of it covered by the union of the two actors' busy
  intervals (their calls that train, evaluate, merge + align, record; on the wall clock every process of the node
  reads). The union, because the actors overlap: the next task trains while the CentralActor records the last one.
  The hand-offs, serialisation, scheduling, driver round trips and any checkpoint write that nothing computes
  beside fall in it; a slower computation inside an actor does not (that is `lora_worker`'s and `end_to_end`'s).
  Beside it, the platform's task time against the bare process's (`vs_in_process`), not judged.
Both rows share one set of runs: whichever runs first measures, the other reuses it.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import time

from imlca.bench.environment import LITE0, experiment_tree
from imlca.bench.measure import Measurement, Settings, divide

EPOCHS, QUICK_EPOCHS = 8, 3  # per task: start-up is measured but does not dominate; --quick: 3 rounds in ~3 min
REPEATS = 3  # runs of each side, alternated

_RUNS: dict[tuple, dict] = {}  # Settings → {"runs": {"platform": [...], "bare": [...]}, ...} measured here


def embedded_tree(settings: Settings) -> dict:
    tree = experiment_tree(LITE0, settings.threads)
    tree["align"] = {"samples_per_class": 128, "epochs": 2}
    tree["train"] = {**tree["train"], "epochs": QUICK_EPOCHS if settings.quick else EPOCHS}
    return copy.deepcopy(tree)


def bare_run(tree: dict) -> dict:
    """`run_protocol` in a new process (`python -m imlca.bench.end_to_end`, the tree on stdin), timed from its
    start: → {"total": s, "tasks": [s per task, from the start / the previous task], "acc": ...}."""
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "imlca.bench.end_to_end"], input=json.dumps(tree), text=True,
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the in-process run failed: {done.stderr[-2000:]}")
    child = json.loads(done.stdout.splitlines()[-1])
    stamps = child["stamps"]  # time.time() after each task, in the child
    return {"total": time.time() - start, "tasks": [b - a for a, b in zip([start, *stamps[:-1]], stamps)],
            "acc": child["acc"]}


def _bare_main() -> None:
    """The child of `bare_run`: the run, then one JSON line (task end times, accuracy matrices) on stdout."""
    import torch

    from imlca.config import ExperimentConfig, from_dict
    from imlca.engine.protocol import run_protocol

    tree = json.loads(sys.stdin.read())
    torch.set_num_threads(max(1, int(tree["resources"]["num_cpus"])))  # as the TaskWorker sets its own
    stamps: list[float] = []
    result = run_protocol(from_dict(ExperimentConfig, tree), on_task=lambda report: stamps.append(time.time()))
    print(json.dumps({"stamps": stamps, "acc": result.acc}))


@contextlib.contextmanager
def pinned(cores: set[int] | None):
    """This process's main thread, and every process it starts meanwhile, on `cores` (None: left as they are)."""
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def shared_cores(threads: int) -> set[int] | None:
    """The first `threads` cores this process may use; None where the cluster is not started here (RAY_ADDRESS
    names another) or the platform cannot pin processes."""
    if os.environ.get("RAY_ADDRESS") or not hasattr(os, "sched_setaffinity"):
        return None
    return set(sorted(os.sched_getaffinity(0))[:threads])


def measured_runs(settings: Settings) -> dict:
    key = (settings.quick, settings.threads)
    if key not in _RUNS:
        from imlca.orchestration.cluster import ensure_ray, shutdown_ray  # Ray lives in orchestration/
        from imlca.orchestration.run_timing import distributed_run

        tree, cores = embedded_tree(settings), shared_cores(settings.threads)
        runs: dict[str, list[dict]] = {"platform": [], "bare": []}
        with pinned(cores):
            if cores is not None:
                shutdown_ray()  # a cluster started before runs on every core: start one on the shared cores
            ensure_ray(max(2, settings.threads))
            try:
                for _ in range(REPEATS):
                    runs["bare"].append(bare_run(tree))
                    runs["platform"].append(distributed_run(tree))
            finally:
                if cores is not None:
                    shutdown_ray()  # the next rows start a cluster on every core again
        _RUNS[key] = {"runs": runs, "tree": tree, "cores": sorted(cores) if cores is not None else None}
    return _RUNS[key]


def _same_results(runs: dict) -> bool:
    first = runs["bare"][0]["acc"]
    return all(run["acc"] == first for side in runs.values() for run in side)


def end_to_end_figures(runs: dict) -> list[float]:
    """Per round, the platform run's seconds over the bare run's."""
    return [divide(p["total"], b["total"]) for p, b in zip(runs["platform"], runs["bare"])]


def covered(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] inside at least one interval (their union, clipped to the window): at most
    end − start whatever the intervals are."""
    clipped = sorted((max(a, start), min(b, end)) for a, b in intervals if min(b, end) > max(a, start))
    total, reach = 0.0, start
    for a, b in clipped:
        if b > reach:
            total, reach = total + b - max(a, reach), b
    return total


def idle_fractions(run: dict) -> tuple[float, list[float]]:
    """A platform run's tasks after the first: Σ(window − busy) / Σ busy over them, and each task's own."""
    windows = list(zip(run["stamps"][1:-1], run["stamps"][2:]))
    busy = [covered(run["intervals"], start, end) for start, end in windows]
    idle = [end - start - b for (start, end), b in zip(windows, busy)]
    return divide(sum(idle), sum(busy)), [divide(i, b) for i, b in zip(idle, busy)]


def bench_end_to_end(settings: Settings) -> Measurement:
    measured = measured_runs(settings)
    runs = measured["runs"]
    timings = {side: statistics.median(r["total"] for r in runs[side]) for side in runs}
    figures = end_to_end_figures(runs)
    details = {"tasks": len(runs["bare"][0]["tasks"]), "repeats": REPEATS, "cores": measured["cores"],
               "config": measured["tree"], "total_seconds": {side: [r["total"] for r in runs[side]] for side in runs},
               "task_seconds": {side: [r["tasks"] for r in runs[side]] for side in runs}}
    cores = "unpinned" if measured["cores"] is None else f"both on core(s) {measured['cores']}"
    note = (f"Lite0 r=8 at 64 px, {details['tasks']} tasks x {measured['tree']['train']['epochs']} epochs, "
            f"{settings.threads} thread(s), {cores}: run_distributed with checkpoints {timings['platform']:.1f} s vs "
            f"run_protocol in a new process {timings['bare']:.1f} s (medians; imports included on both sides)")
    return Measurement(figures, timings, {"platform_vs_in_process": statistics.median(figures)},
                       {"same_accuracies": _same_results(runs)}, details, note=note)


def bench_task_overhead(settings: Settings) -> Measurement:
    runs = measured_runs(settings)["runs"]
    fractions = [idle_fractions(run) for run in runs["platform"]]
    versus = [divide(p - b, b) for platform, bare in zip(runs["platform"], runs["bare"])
              for p, b in zip(platform["tasks"][1:], bare["tasks"][1:])]
    timings = {"platform_task_median": statistics.median(t for r in runs["platform"] for t in r["tasks"][1:]),
               "bare_task_median": statistics.median(t for r in runs["bare"] for t in r["tasks"][1:])}
    note = (f"tasks 1.. of the end_to_end runs: {timings['platform_task_median']:.2f} s a task on the platform, "
            f"{timings['bare_task_median']:.2f} s in the bare process ({statistics.median(versus):+.1%}, not "
            f"judged: it also holds how fast the actors compute, and run-to-run noise)")
    return Measurement([whole for whole, _ in fractions], timings, {"vs_in_process": statistics.median(versus)},
                       {"same_accuracies": _same_results(runs)},
                       {"per_task": [tasks for _, tasks in fractions], "vs_in_process": versus}, note=note)


if __name__ == "__main__":
    _bare_main()
