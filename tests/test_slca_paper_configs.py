"""SLCA's paper configs hold its authors' values (GengDavid/SLCA @ 169d4e6; file:line of each below), on the
paper's splits with the IM runs' data, transforms and weights."""
import pytest

from imlca.config import flatten, load_config
from imlca.config.sweep import load_sweep

from conftest import REPO

SLCA = REPO / "sweeps" / "paper" / "slca"
AUTHORS = {  # key → (value, where in their repository)
    "train.lr": (0.01, "models/slca.py:18 lrate = 0.01"),
    "train.batch_size": (128, "models/slca.py:21 batch_size = 128"),
    "train.weight_decay": (5e-4, "models/slca.py:24 weight_decay = 5e-4"),
    "train.momentum": (0.9, "models/slca.py:165 optim.SGD(..., momentum=0.9)"),
    "slca.backbone_lr_scale": (0.01, "models/slca.py:48 bcb_lrscale = 1.0/100, lr at :158"),
    "slca.lr_decay": (0.1, "models/slca.py:20 lrate_decay = 0.1, MultiStepLR at :166"),
    "slca.ca_epochs": (5, "models/slca.py:26 ca_epochs = 5; exps/slca/slca_*.json:16"),
    "slca.ca_lr": (0.01, "models/slca.py:181 'lr': lrate, CosineAnnealingLR at :185"),
    "slca.ca_samples_per_class": (256, "models/slca.py:197 num_sampled_pcls = 256"),
    "align.ridge": (1e-4, "models/base.py:262 torch.cov(...) + eye * 1e-4"),
    "slca.true_task_ids": (False, "models/slca.py:200 t_id = c_id // task_size (the current task's)"),
    "slca.fresh_final_norm": (False, "PILOT's weights keep their norm; the original's fresh norm is "
                                     "convs/vits.py:711, a setting"),
}
PER_BENCHMARK = {  # benchmark → (train.epochs, slca.milestones, slca.logit_norm_temperature), from exps/slca/
    "cifar100": ((20, [18], 0.1), "slca_cifar.json:15,18,17"),
    "imagenet_r": ((50, [40], 0.1), "slca_imgnetr.json:15,18,17"),
    "cub": ((50, [40], 0.1), "slca_cub.json:15,18,17"),
    "cars": ((50, [40], 0.05), "slca_cars.json:15,18,17"),
}


@pytest.mark.parametrize("benchmark", sorted(PER_BENCHMARK))
def test_slca_paper_config_is_the_authors(benchmark):
    cfg = load_config(SLCA / f"{benchmark}.yaml")
    flat = flatten(cfg)
    for key, (value, source) in AUTHORS.items():
        assert flat[key] == value, f"{key}: {flat[key]!r}, authors {source}"
    (epochs, milestones, tau), source = PER_BENCHMARK[benchmark]
    assert (cfg.train.epochs, cfg.slca.milestones, cfg.slca.logit_norm_temperature) == (epochs, milestones, tau), \
        source
    assert cfg.align.methods == ["slca"] and cfg.data.benchmark == benchmark and cfg.seed == 1993
    assert cfg.model.pretrained_tag == "augreg_in21k_ft_in1k"  # the paper's timm 0.6.12 weights, as IM's
    im = load_config(REPO / "sweeps" / "paper" / f"{benchmark}.yaml")
    for key in ("data", "eval"):  # the same splits, transforms and evaluation as the IM runs
        assert getattr(cfg, key) == getattr(im, key)


def test_benchmarks_without_an_authors_setting_are_searched_on_validation():
    sweep = load_sweep(SLCA / "search.yaml")
    assert sweep.cfg.metric == "val_avg_acc" and sweep.base_tree["data"]["val_fraction"] > 0
    assert set(sweep.cfg.confirm_space) == {"seed"}
    assert not (SLCA / "imagenet_a.yaml").exists()  # none until one is chosen there


def test_table1_holds_every_benchmark_with_an_authors_setting():
    cases = [case["file"] for case in load_sweep(SLCA.parent / "table1.yaml").cfg.space["case"]["grid"]]
    assert sorted(c for c in cases if c.startswith("slca/")) == sorted(f"slca/{b}.yaml" for b in PER_BENCHMARK)
