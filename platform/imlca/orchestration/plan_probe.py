"""Ray's side of `imlca plan --probe`: what starting Ray and Tune costs on this machine.

`python -m imlca.orchestration.plan_probe` (a new process, as `imlca sweep` is one) imports what the sweep command
imports, starts local Ray, runs one empty Tune trial whose process imports what a plain trial's does, and prints
one JSON line of seconds: `imports_s`, `ray_init_s`, `first_trial_s` (Tune's start-up and the trial process, until
the trial runs), `fit_end_s` (after the trial's last report, until `fit` returns), `shutdown_s`.
"""
from __future__ import annotations

import json
import os
import shutil
import time

START = time.perf_counter()

from ray import tune  # noqa: E402 — timed from the process start

import imlca.orchestration.launch  # noqa: E402,F401 — what `imlca sweep` imports
from imlca.orchestration.cluster import ensure_ray, shutdown_ray  # noqa: E402


def empty_trial(config: dict) -> None:
    """A plain trial's process imports tune_sweep when it unpickles its trainable; this one does the same."""
    import imlca.orchestration.tune_sweep  # noqa: F401

    tune.report({"started": time.time()})


def startup_seconds() -> dict[str, float]:
    imports = time.perf_counter() - START
    start = time.perf_counter()
    ensure_ray()
    ray_init = time.perf_counter() - start
    storage = os.path.abspath(os.environ.get("TMPDIR", "/tmp"))
    tuner = tune.Tuner(tune.with_resources(empty_trial, {"CPU": 1}),
                       run_config=tune.RunConfig(name=f"imlca-plan-probe-{os.getpid()}", storage_path=storage,
                                                 verbose=0))
    begin_wall, begin = time.time(), time.perf_counter()
    try:
        grid = tuner.fit()
    finally:
        shutil.rmtree(os.path.join(storage, f"imlca-plan-probe-{os.getpid()}"), ignore_errors=True)
    fit = time.perf_counter() - begin
    first_trial = grid[0].metrics["started"] - begin_wall
    start = time.perf_counter()
    shutdown_ray()
    return {"imports_s": imports, "ray_init_s": ray_init, "first_trial_s": first_trial,
            "fit_end_s": fit - first_trial, "shutdown_s": time.perf_counter() - start}


if __name__ == "__main__":
    print(json.dumps(startup_seconds()), flush=True)
