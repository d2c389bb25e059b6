"""Every shipped experiment and sweep definition loads and says what the docs say it does."""
import dataclasses

import pytest

from imlca.config import ExperimentConfig, flatten, from_dict, load_config, merge_trees
from imlca.errors import ConfigError
from imlca.config.sweep import load_sweep

from conftest import REPO

SWEEPS = REPO / "sweeps"
PAPER = ["cifar100", "imagenet_r", "imagenet_a", "cub", "omnibenchmark", "vtab", "cars"]


@pytest.mark.parametrize("path", sorted(str(p.relative_to(SWEEPS)) for p in SWEEPS.rglob("*.yaml")))
def test_every_file_loads(path):
    if "\nbase: " in "\n" + (SWEEPS / path).read_text():  # a sweep names its base experiment
        load_sweep(SWEEPS / path)
    else:
        load_config(SWEEPS / path)


@pytest.mark.parametrize("benchmark", PAPER)
def test_paper_configs_are_the_paper_setup(benchmark):
    cfg = load_config(SWEEPS / "paper" / f"{benchmark}.yaml")
    assert cfg.data.benchmark == benchmark and cfg.name == benchmark
    assert (cfg.model.backbone, cfg.model.pretrained) == ("vit_base_patch16_224", True)
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.target) == (64, 128.0, None)  # None: blocks.N.attn.qkv
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.min_lr) == (10, 64, 1e-2, 1e-6)
    a = cfg.align
    assert (a.samples_per_class, a.epochs, a.batch_size, a.lr, a.lam) == (512, 10, 128, 5e-3, 0.1)
    assert a.methods == ["im_lca", "im", "im_ca"] and cfg.merge.alpha == 1.0


def test_table1_runs_every_paper_setting_as_its_file_says_on_three_seeds():
    """Each `case` of table1.yaml is one file of sweeps/paper (IM per benchmark, then each family's), and a trial of
    that case resolves to exactly that file's experiment: every family's every benchmark file is in the grid."""
    sweep = load_sweep(SWEEPS / "paper" / "table1.yaml")
    assert sweep.cfg.space["seed"] == {"grid": [1993, 1994, 1995]}
    cases = {case["file"]: case for case in sweep.cfg.space["case"]["grid"]}
    families = sorted(p.relative_to(SWEEPS / "paper").as_posix() for p in (SWEEPS / "paper").glob("*/*.yaml")
                      if p.stem in PAPER)
    assert list(cases)[:len(PAPER)] == [f"{b}.yaml" for b in PAPER] and sorted(list(cases)[len(PAPER):]) == families
    for name, case in cases.items():
        trial = from_dict(ExperimentConfig, merge_trees(sweep.base_tree, {"case": case, "seed": 1994}))
        own = load_config(SWEEPS / "paper" / name)
        assert flatten(dataclasses.replace(trial, name=own.name, seed=own.seed)) == flatten(own), name
        assert trial.seed == 1994


def test_a_case_may_not_change_what_a_trial_reserves(tmp_path):
    (tmp_path / "base.yaml").write_text(f"extends: {SWEEPS / 'tiny.yaml'}\n")
    (tmp_path / "big.yaml").write_text(f"extends: {SWEEPS / 'tiny.yaml'}\nresources: {{num_cpus: 4}}\n")
    (tmp_path / "s.yaml").write_text("base: base.yaml\nspace:\n  case: {grid: [base.yaml, big.yaml]}\n")
    with pytest.raises(ConfigError, match=r"space.case.*big.yaml sets resources.num_cpus, which a trial takes from "
                                          r"the sweep's base"):
        load_sweep(tmp_path / "s.yaml")


def test_ablation_covers_the_five_axes():
    space = load_sweep(SWEEPS / "paper" / "ablation.yaml").cfg.space
    assert set(space) == {"align.lam", "merge.alpha", "lora.rank", "merge.rule", "merge.space"}


def test_extends_overlays_its_parent(tmp_path):
    (tmp_path / "child.yaml").write_text(f"extends: {SWEEPS / 'tiny.yaml'}\nlora:\n  rank: 2\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.lora.rank == 2 and cfg.lora.alpha == 8.0 and cfg.data.benchmark == "synthetic"


@pytest.mark.parametrize("body, match", [
    ("space:\n  lora.rank: {grid: [4, 0]}\n", "config key 'lora.rank': must be >= 1"),
    ("space:\n  lora.rank: {normal: [4, 8]}\n", "space.lora.rank"),
    ("space:\n  lora.rnak: {grid: [4]}\n", "lora.rnak"),
    ("search: bayes\n", "config key 'search': unknown value 'bayes'"),
    ("search: optuna\nspace:\n  align.lam: {grid: [0.1]}\n", "optuna cannot search a grid"),
])
def test_bad_sweeps_are_refused_naming_the_key(tmp_path, body, match):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {SWEEPS / 'tiny.yaml'}\n{body}")
    with pytest.raises(ConfigError, match=match):
        load_sweep(bad)


def test_benchmarks_json_lists_the_registry(capsys):
    import json

    from imlca.cli import main

    assert main(["benchmarks", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["digits_fashion20"] == {"name": "digits_fashion20", "num_classes": 20, "task_sizes": [4, 4, 4, 4, 4]}
    assert rows["cars"]["task_sizes"] == [16] + [20] * 9 and set(PAPER) <= set(rows)
