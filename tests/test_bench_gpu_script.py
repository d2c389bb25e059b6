"""`bench --gpu` runs with torch, torchvision, timm and peft alone (the GPU machine has no Ray and no MLflow), and
the bench table's units for seconds and fractions. Speeds are judged by the benchmark itself, never here."""
import json
import subprocess
import sys

import pytest
import torch

from imlca.bench.measure import Goal, format_value
from imlca.cli import main

from conftest import REPO

# Ray and MLflow look installed (availability probes such as accelerate's find_spec see them) but cannot be
# imported: any attempt is recorded and fails the run with exit code 3.
BLOCK_RAY_AND_MLFLOW = '''
import importlib.abc, importlib.util, sys
BLOCKED, attempts = ("ray", "mlflow"), []

class Blocked(importlib.abc.Loader):
    def create_module(self, spec):
        attempts.append(spec.name)
        raise ImportError(f"{spec.name} is not installed on the GPU machine")

    def exec_module(self, module):
        pass

class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_loader(name, Blocked()) if name.split(".")[0] in BLOCKED else None

sys.meta_path.insert(0, Finder())
from imlca.cli import main
code = main(sys.argv[1:])
print("import attempts:", attempts)
sys.exit(3 if attempts else code)
'''


def test_gpu_script_imports_neither_ray_nor_mlflow(tmp_path):
    script, out = tmp_path / "no_ray.py", tmp_path / "gpu.json"
    script.write_text(BLOCK_RAY_AND_MLFLOW)
    done = subprocess.run([sys.executable, str(script), "bench", "--gpu", "--quick", "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO / "platform"), "PATH": "/usr/bin:/bin",
                               "IMLCA_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "import attempts: []" in done.stdout
    row = json.loads(out.read_text())["results"][0]
    assert row["name"] == "gpu_paths" and row["error"] is None
    rates = row["details"]["images_per_s"]
    assert set(rates) == {"synthetic", "cached", "jpeg"} and all(v > 0 for v in rates.values())
    if not torch.cuda.is_available():  # the CPU smoke test of the same three paths, nothing judged
        assert row["skipped"].startswith("no CUDA device: a CPU smoke test") and row["verdict"] is None


def test_gpu_flag_runs_alone(capsys):
    assert main(["bench", "--gpu", "--only", "merge"]) == 2
    assert capsys.readouterr().err == "error: --gpu runs gpu_paths alone; drop --only, or use --only gpu_paths\n"


@pytest.mark.parametrize("unit, goal, value, goal_text, value_text", [
    ("x", 1.05, 1.23456, "<= 1.05x", "1.235x"),
    ("s", 1.0, 0.5234, "<= 1 s", "0.52 s"),
    ("fraction", 0.01, -0.0042, "<= 1%", "-0.4%"),
    ("MFU", 0.4, 0.4123, "<= 0.4 MFU", "41.2%"),
])
def test_units_of_goals_and_values(unit, goal, value, goal_text, value_text):
    assert Goal("<=", goal, unit, "t").describe() == goal_text
    assert format_value(value, unit) == value_text
