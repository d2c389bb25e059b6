"""imlca.core stays pure: torch, numpy, the standard library and imlca.errors only; never Ray or MLflow."""
import ast
import subprocess
import sys
from pathlib import Path

import imlca.core

CORE = Path(imlca.core.__file__).parent
FORBIDDEN = ("ray", "mlflow", "imlca.orchestration", "imlca.tracking")
ALLOWED_THIRD_PARTY = {"torch", "numpy"}
ALLOWED_IMLCA = ("imlca.core", "imlca.errors")


def _imports(path: Path) -> list[str]:
    # Absolute module names of every import in the file; relative imports resolve against imlca.core
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = "imlca.core".split(".")[: 2 - node.level + 1]
                names.append(".".join(package + ([node.module] if node.module else [])))
            else:
                names.append(node.module)
    return names


def _is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_core_files_exist():
    assert {p.name for p in CORE.glob("*.py")} >= {"merging.py", "gaussian_bank.py", "lca.py", "metrics.py"}


def test_no_core_file_imports_orchestration_or_tracking_layers():
    for path in sorted(CORE.rglob("*.py")):
        for name in _imports(path):
            assert not any(_is_under(name, bad) for bad in FORBIDDEN), f"{path.name} imports {name}"


def test_core_imports_only_torch_numpy_stdlib_and_errors():
    for path in sorted(CORE.rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            ok = top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY
            ok = ok or any(_is_under(name, allowed) for allowed in ALLOWED_IMLCA)
            assert ok, f"{path.name} imports {name}"


def test_importing_core_loads_neither_ray_nor_mlflow():
    code = (
        "import sys, imlca.core\n"
        "loaded = sorted(m for m in ('ray', 'mlflow') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
        "print('clean')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_the_import_scan_sees_absolute_and_relative_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import ray.tune\nfrom mlflow import log_metric\nfrom ..tracking import x\nfrom . import lca\n")
    assert _imports(sample) == ["ray.tune", "mlflow", "imlca.tracking", "imlca.core"]


def test_ray_and_mlflow_stay_in_their_layers():
    """Ray is imported in orchestration/ only, MLflow in tracking/ only (DESIGN §3)."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "platform" / "imlca"
    layers = {"ray": "orchestration", "mlflow": "tracking"}
    for path in package.rglob("*.py"):
        text = path.read_text()
        for library, layer in layers.items():
            if re.search(rf"^\s*(import|from) {library}\b", text, re.MULTILINE):
                assert path.relative_to(package).parts[0] == layer, f"{path} imports {library}"
