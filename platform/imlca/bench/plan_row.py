"""`plan`: the wall time `imlca plan --probe` predicts for the embedded sweep (what `make sweep` runs) against that
sweep run right after it; both new processes in a temporary folder (own MLflow store, Ray results, probe cache).
The goal is a prediction within 20% (0.8–1.2×): the row holds |predicted / measured − 1| to ≤ 0.2.

`--quick` plans and runs a smaller copy of the sweep (one epoch, 100 training and 25 test images per class).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from imlca.bench.measure import Measurement, Settings
from imlca.config import bundled_sweep


def sweep_file(folder: Path, quick: bool) -> Path:
    if not quick:
        return bundled_sweep("embedded.yaml")
    path = folder / "embedded_quick.yaml"
    path.write_text(yaml.safe_dump({
        "base": str(bundled_sweep("default.yaml")), "space": {"merge.rule": {"grid": ["ties", "max_abs"]}},
        "set": {"train.epochs": 1, "data.train_per_class": 100, "data.test_per_class": 25},
        "max_concurrent_trials": 2}))
    return path


def bench_plan(settings: Settings) -> Measurement:
    with tempfile.TemporaryDirectory(prefix="imlca-bench-plan-") as tmp:
        folder = Path(tmp)
        sweep = sweep_file(folder, settings.quick)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
               "IMLCA_PLAN_PROBES": str(folder / "probes.json"), "IMLCA_STORAGE": str(folder / "ray_results"),
               "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
        env.pop("RAY_ADDRESS", None)  # a local Ray of its own, as `make sweep` starts
        command = [sys.executable, "-m", "imlca"]
        out = subprocess.run([*command, "plan", str(sweep), "--probe", "--json"], cwd=tmp, env=env, check=True,
                             capture_output=True, text=True)
        predicted = json.loads(out.stdout)["wall_s"]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        subprocess.run([*command, "sweep", str(sweep)], cwd=tmp, env=env, check=True, capture_output=True)
        measured = time.perf_counter() - start
    ratio = predicted / measured
    note = (f"predicted {predicted:.0f} s, measured {measured:.0f} s: {ratio:.2f}x (load {load:.1f} at the sweep's "
            f"start, {os.getloadavg()[0]:.1f} at its end)")
    return Measurement([abs(ratio - 1)], {"predicted": predicted, "measured": measured},
                       {"predicted/measured": ratio},
                       details={"sweep": sweep.name, "quick": settings.quick}, note=note)
