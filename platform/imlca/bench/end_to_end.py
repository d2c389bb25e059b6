"""`end_to_end` and `task_overhead`: what the platform costs around a whole run.

One embedded-size run (the embedded default's model, Lite0 with LoRA r=8 at 64 px, on the synthetic images: 3
tasks of 8 epochs, about a minute) through the platform, `run_distributed` (a TaskWorker and a MergeActor, a
checkpoint after every task, actor start-up included; the Ray cluster is up beforehand, as on a warm cluster),
against the same computation as a bare script: a new Python process running `run_protocol` without checkpoints
(the torch + peft loop with nothing around it), its interpreter start and imports included as the actors' are,
with as many torch threads as the TaskWorker holds CPUs. The two are run alternately; the accuracy matrices must
agree.

- `end_to_end`: platform run time / in-process run time.
- `task_overhead`: per task after the first (the first one includes start-up), the time the platform spent not
  computing, as a fraction of the time it computed: the task's wall time on the driver less the seconds the two
  actors spent in its train, evaluate, merge + align and record calls (their own clocks), over those seconds;
  the median over tasks. The hand-offs, serialisation, scheduling, driver round trips and any checkpoint write
  not hidden behind the next task's training fall in it; a slower computation inside an actor does not (that is
  `lora_worker`'s and `end_to_end`'s). Beside it, the platform's task time against the bare process's
  (`vs_in_process`): two runs on this machine differ by ±10% a task, so that difference cannot resolve 1%.
Both rows share one set of runs: whichever runs first measures, the other reuses it.
"""
from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import time

from imlca.bench.environment import LITE0, experiment_tree
from imlca.bench.measure import Measurement, Settings, divide

EPOCHS = 8  # per task: the run takes about a minute, so start-up is measured but does not dominate

_RUNS: dict[tuple, dict] = {}  # Settings → {"platform": [...], "bare": [...]} measured in this process


def embedded_tree(settings: Settings) -> dict:
    tree = experiment_tree(LITE0, settings.threads)
    tree["align"] = {"samples_per_class": 128, "epochs": 2}
    tree["train"] = {**tree["train"], "epochs": EPOCHS}
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


def measured_runs(settings: Settings) -> dict:
    key = (settings.quick, settings.threads)
    if key not in _RUNS:
        from imlca.orchestration.cluster import ensure_ray  # Ray lives in orchestration/
        from imlca.orchestration.run_timing import distributed_run

        ensure_ray(max(2, settings.threads))
        tree, repeats = embedded_tree(settings), 1 if settings.quick else 2
        runs = {"platform": [], "bare": []}
        for _ in range(repeats):
            runs["bare"].append(bare_run(tree))
            runs["platform"].append(distributed_run(tree))
        _RUNS[key] = {"runs": runs, "tree": tree, "repeats": repeats}
    return _RUNS[key]


def _same_results(runs: dict) -> bool:
    first = runs["bare"][0]["acc"]
    return all(run["acc"] == first for side in runs.values() for run in side)


def bench_end_to_end(settings: Settings) -> Measurement:
    measured = measured_runs(settings)
    runs = measured["runs"]
    timings = {side: statistics.median(r["total"] for r in runs[side]) for side in runs}
    ratio = divide(timings["platform"], timings["bare"])
    details = {"tasks": len(runs["bare"][0]["tasks"]), "repeats": measured["repeats"], "config": measured["tree"],
               "task_seconds": {side: [r["tasks"] for r in runs[side]] for side in runs}}
    note = (f"Lite0 r=8 at 64 px, {details['tasks']} tasks x {EPOCHS} epochs, {settings.threads} thread(s): "
            f"run_distributed with checkpoints {timings['platform']:.1f} s vs run_protocol in a new process "
            f"{timings['bare']:.1f} s (imports included on both sides)")
    return Measurement(ratio, timings, {"platform_vs_in_process": ratio}, {"same_accuracies": _same_results(runs)},
                       details, note=note)


def bench_task_overhead(settings: Settings) -> Measurement:
    measured = measured_runs(settings)
    runs = measured["runs"]
    idle, versus = [], []
    for platform, bare in zip(runs["platform"], runs["bare"]):
        idle += [divide(wall - busy, busy) for wall, busy in zip(platform["tasks"][1:], platform["busy"][1:])]
        versus += [divide(p - b, b) for p, b in zip(platform["tasks"][1:], bare["tasks"][1:])]
    fraction = statistics.median(idle)
    timings = {"platform_task_median": statistics.median(t for r in runs["platform"] for t in r["tasks"][1:]),
               "computing_median": statistics.median(t for r in runs["platform"] for t in r["busy"][1:]),
               "bare_task_median": statistics.median(t for r in runs["bare"] for t in r["tasks"][1:])}
    note = (f"tasks 1.. of the end_to_end runs: {timings['platform_task_median']:.2f} s a task on the platform, "
            f"{timings['computing_median']:.2f} s of it computing in the actors (medians); in-process "
            f"{timings['bare_task_median']:.2f} s a task ({statistics.median(versus):+.1%}, not judged: noise)")
    return Measurement(fraction, timings, {"orchestration": fraction}, {"same_accuracies": _same_results(runs)},
                       {"orchestration": idle, "vs_in_process": versus}, note=note)


if __name__ == "__main__":
    _bare_main()
