"""Scientific notation is a float everywhere a researcher writes one: config files, --set and sweep spaces (YAML 1.2's
float rule; PyYAML alone reads YAML 1.1, where `3e-3` is the string '3e-3')."""
import pytest

from imlca.config import load_config
from imlca.config.loading import load_yaml
from imlca.config.sweep import load_sweep

from conftest import TINY


@pytest.mark.parametrize("text, value", [
    ("3e-3", 0.003), ("1E5", 100000.0), ("-2.5e+2", -250.0), (".5e-1", 0.05), ("1.0e-3", 0.001), ("1.", 1.0),
])
def test_scientific_notation_is_a_float(text, value):
    parsed = load_yaml(text)
    assert isinstance(parsed, float) and parsed == value


@pytest.mark.parametrize("text, value", [("3", 3), ("1_000", 1000), ("ties", "ties"), ("1.2.3", "1.2.3"),
                                         ("3e", "3e"), ("e3", "e3"), ("true", True)])
def test_other_scalars_keep_their_yaml_1_1_types(text, value):
    parsed = load_yaml(text)
    assert parsed == value and type(parsed) is type(value)


def test_in_a_config_file_and_in_an_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"extends: {TINY}\ntrain:\n  lr: 3e-3\n  min_lr: 1e-7\n")
    cfg = load_config(path, ["align.lr=2E-2", "lora.rank=8"])
    assert (cfg.train.lr, cfg.train.min_lr, cfg.align.lr, cfg.lora.rank) == (0.003, 1e-7, 0.02, 8)


def test_in_a_sweep_space(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(f"base: {TINY}\nset: {{train.lr: 4e-2}}\n"
                    "space:\n  align.lr: {grid: [1e-3, 5e-3]}\n  train.min_lr: {loguniform: [1e-7, 1e-5]}\n")
    sweep = load_sweep(path)
    assert sweep.cfg.space == {"align.lr": {"grid": [0.001, 0.005]}, "train.min_lr": {"loguniform": [1e-7, 1e-5]}}
    assert sweep.base_tree["train"]["lr"] == 0.04
