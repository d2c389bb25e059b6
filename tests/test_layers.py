"""The package's layers: core is pure torch/numpy; engine never reaches up to orchestration or tracking; config,
the CLI's parsing and `import imlca` load no torch; the merge side loads no timm/peft/torchvision; Ray lives in
orchestration/ and MLflow in tracking/ only; every choice is named once, in imlca.registries."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


PACKAGE = CORE.parent


def _scan(folder: str) -> dict[str, list[str]]:
    return {str(p.relative_to(PACKAGE)): _imports(p) for p in sorted((PACKAGE / folder).rglob("*.py"))}


@pytest.mark.parametrize("folder, forbidden", [
    ("engine", ("imlca.orchestration", "imlca.tracking", "imlca.bench", "imlca.cli", "ray", "mlflow")),
    ("orchestration", ("imlca.bench", "imlca.cli")),
    ("tracking", ("imlca.bench", "imlca.cli", "imlca.orchestration", "ray")),
    ("config", ("torch", "numpy", "imlca.engine", "imlca.data", "imlca.models", "imlca.core")),
    ("data", ("imlca.engine", "imlca.orchestration", "imlca.tracking", "ray", "mlflow")),
    ("models", ("imlca.engine", "imlca.orchestration", "imlca.tracking", "ray", "mlflow")),
    ("planning", ("imlca.orchestration", "imlca.tracking", "imlca.bench", "imlca.cli", "ray", "mlflow")),
])
def test_layers_import_only_downwards(folder, forbidden):
    for path, names in _scan(folder).items():
        for name in names:
            assert not any(_is_under(name, bad) for bad in forbidden), f"{path} imports {name}"


def _loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    probe = f"import sys\n{code}\nprint(sorted(m for m in {modules!r} if m in sys.modules))\n"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                            cwd=PACKAGE.parents[1])
    assert result.returncode == 0, result.stderr
    return eval(result.stdout.strip().splitlines()[-1])  # a list literal printed by the probe


def test_config_and_cli_parsing_load_no_torch():
    code = ("import imlca, imlca.config, imlca.cli\n"
            "from imlca.config import load_config\nfrom imlca.config.sweep import load_sweep\n"
            "load_config('sweeps/default.yaml', ['merge.rule=max_abs'])\nload_sweep('sweeps/embedded.yaml')\n"
            "imlca.cli.build_parser().parse_args(['run', 'sweeps/tiny.yaml'])")
    assert _loaded_after(code, ("torch", "timm", "peft", "ray", "mlflow")) == []


def test_the_merge_side_loads_no_model_or_image_code():
    code = ("import torch\nfrom imlca.config import load_config\nfrom imlca.engine.state import MergeState\n"
            "import imlca.orchestration.wire, imlca.engine.checkpoint\n"
            "MergeState(load_config('sweeps/tiny.yaml'), {'w': torch.zeros(2)}, 4)")
    assert _loaded_after(code, ("timm", "peft", "torchvision", "imlca.engine.runner", "imlca.data")) == []


def test_a_plain_trial_process_loads_no_model_or_image_code():
    # what a plain sweep's trial process imports (Tune unpickles `trainable` from tune_sweep): it only drives
    # actors, so it must not pay for timm, peft and transformers (the TaskWorker loads them)
    code = ("from ray import cloudpickle\nimport imlca.orchestration.tune_sweep as ts\n"
            "cloudpickle.loads(cloudpickle.dumps(ts.trainable))")
    assert _loaded_after(code, ("timm", "peft", "transformers", "torchvision", "imlca.engine.runner")) == []


def test_cli_command_modules_do_not_import_each_other():
    """A command module may use the package's shared parts (progress.py, notebook.py), never another command."""
    from imlca.cli import COMMANDS

    commands = [f"imlca.cli.{name}" for name in COMMANDS]
    for path, names in _scan("cli").items():
        assert not any(_is_under(name, command) for name in names for command in commands), f"{path} imports {names}"


def keep_previous(prev: torch.Tensor, curr: torch.Tensor) -> torch.Tensor:
    CALLS.append(prev.shape)
    return prev.clone()


CALLS: list = []


def test_a_choice_added_to_a_registry_needs_no_other_edit():
    from imlca.config import load_config
    from imlca.engine.protocol import run_protocol
    from imlca.registries import MERGE_RULES

    MERGE_RULES.register("keep_previous", f"{__name__}:keep_previous")
    try:
        cfg = load_config(PACKAGE.parents[1] / "sweeps" / "tiny.yaml", ["merge.rule=keep_previous"])
        run_protocol(cfg)
    finally:
        del MERGE_RULES["keep_previous"]
    assert CALLS, "the registered rule was never called"
    with pytest.raises(Exception, match="unknown value 'keep_previous'"):
        load_config(PACKAGE.parents[1] / "sweeps" / "tiny.yaml", ["merge.rule=keep_previous"])
