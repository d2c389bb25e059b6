"""Installable where users are: the wheel with its bundled sweeps, bare config names, Fashion-MNIST without root,
sources that Python 3.10 parses (pyproject's requires-python floor)."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from imlca.config import bundled_names, bundled_sweep, config_path, load_config
from imlca.config.sweep import load_sweep
from imlca.data import embedded
from imlca.errors import ConfigFileError, DataError

REPO = Path(__file__).resolve().parents[1]
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the checkout's sources stay out of sight


# Standard-library names that Python 3.11 added (tomllib, enum.StrEnum, datetime.UTC, typing.Self, ...).
PY311_NAMES = {"tomllib", "StrEnum", "UTC", "Self", "Never", "LiteralString", "assert_type", "reveal_type", "TaskGroup",
               "ExceptionGroup", "BaseExceptionGroup", "NotRequired", "Required", "file_digest", "add_note"}


def test_sources_parse_as_python_310_and_use_no_311_names():
    late = []
    for path in sorted([*(REPO / "platform").rglob("*.py"), *(REPO / "tests").rglob("*.py")]):
        try:
            tree = ast.parse(path.read_text(), str(path), feature_version=(3, 10))
        except SyntaxError as err:
            late.append(f"{path.relative_to(REPO)}:{err.lineno}: {err.msg}")
            continue
        for node in ast.walk(tree):
            names = {getattr(node, "id", None), getattr(node, "attr", None)}
            names |= {alias.name.split(".")[0] for alias in getattr(node, "names", []) if isinstance(alias, ast.alias)}
            if names & PY311_NAMES:
                late.append(f"{path.relative_to(REPO)}:{node.lineno}: {sorted(names & PY311_NAMES)}")
    assert late == []


def test_bundled_sweeps_are_the_checkouts_sweep_files():
    on_disk = sorted(p.relative_to(REPO / "sweeps").as_posix() for p in (REPO / "sweeps").rglob("*.yaml"))
    assert bundled_names() == on_disk
    assert bundled_sweep("tiny.yaml").read_text() == (REPO / "sweeps" / "tiny.yaml").read_text()
    with pytest.raises(ConfigFileError, match=r"no bundled config of that name; bundled: default\.yaml, "):
        bundled_sweep("nope.yaml")


def test_bare_names_resolve_to_bundled_files_unless_a_local_file_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_path("tiny.yaml") == bundled_sweep("tiny.yaml")
    assert config_path("sweeps/paper/table1.yaml") == bundled_sweep("paper/table1.yaml")
    assert config_path("missing.yaml") == Path("missing.yaml")
    assert load_config("tiny.yaml", ["train.epochs=1"]).train.epochs == 1
    sweep = load_sweep("embedded.yaml")  # its `base: default.yaml` is bundled too
    assert (sweep.name, sweep.base_tree["data"]["benchmark"]) == ("embedded", "digits_fashion20")
    (tmp_path / "tiny.yaml").write_text("name: mine\n")
    assert config_path("tiny.yaml") == Path("tiny.yaml")
    assert load_config("tiny.yaml").name == "mine"
    (tmp_path / "s.yaml").write_text("base: tiny.yaml\nset: {train.epochs: 1}\n")  # a local base wins, too
    assert load_sweep("s.yaml").base_tree["name"] == "mine"


def test_fashion_mnist_is_read_from_a_user_folder_and_its_absence_says_how_to_get_it(tmp_path, monkeypatch):
    found = embedded.fashion_dir()  # Debian's folder or the user folder `make data` filled (set up by make test)
    user = tmp_path / "fashion"
    user.mkdir()
    for name in embedded.FASHION_FILES:
        shutil.copy(found / name, user / name)
    monkeypatch.setenv("IMLCA_FASHION_MNIST", str(user))
    assert embedded.fashion_dir() == user
    images, labels = embedded._fashion("t10k", 3)
    assert images.shape == (30, 28, 28) and sorted(set(labels.tolist())) == list(range(10))

    monkeypatch.setenv("IMLCA_FASHION_MNIST", str(tmp_path / "empty"))
    with pytest.raises(DataError) as err:
        embedded.fashion_dir()
    message = str(err.value)
    assert "\n" not in message and "Fashion-MNIST not found in " + str(tmp_path / "empty") in message
    assert "apt-get download dataset-fashion-mnist && dpkg-deb -x dataset-fashion-mnist_*.deb ." in message
    assert f"cp ./usr/share/datasets/fashion-mnist/*.gz {tmp_path / 'empty'}/" in message


def _fresh_env_with_wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the sources, install it `--no-deps` into a new venv that sees this
    environment's packages through a .pth line (its .pth files, e.g. an editable imlca, stay unprocessed)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("platform", "sweeps"):  # platform/imlca/sweeps stays a link to ../../sweeps
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=skip)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], env=CLEAN_ENV, check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("imlca-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env=CLEAN_ENV, check=True, timeout=120)
    python = venv / "bin" / "python"
    # --ignore-installed: never look at, let alone uninstall, an imlca of another environment
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--ignore-installed", "-q", str(wheel)], env=CLEAN_ENV, check=True, timeout=300)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          env=CLEAN_ENV, check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "project_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_wheel_gives_a_working_imlca_outside_the_checkout(tmp_path):
    venv = _fresh_env_with_wheel(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args: str) -> str:
        done = subprocess.run([str(venv / "bin" / "imlca"), *args], cwd=work, env=CLEAN_ENV, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import imlca.config as c; "
                            "print(c.__file__); print(c.bundled_sweep('tiny.yaml'))"],
                           cwd=work, env=CLEAN_ENV, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where
    assert Path(where[1]).read_text() == (REPO / "sweeps" / "tiny.yaml").read_text()

    names = [line.split()[0] for line in run("benchmarks").splitlines()]
    assert {"digits_fashion20", "synthetic"} <= set(names)

    out = run("run", "tiny.yaml", "--set", "train.epochs=1", "--set", "align.epochs=1", "--out", "tiny-run")
    assert out.startswith("run tiny: synthetic, vit_test_tiny")
    assert (work / "tiny-run" / "results.json").is_file() and (work / "tiny-run" / "adapter.safetensors").is_file()
