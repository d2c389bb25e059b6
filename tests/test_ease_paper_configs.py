"""EASE's paper configs hold its authors' values (sun-hailong/CVPR24-Ease @ 6d67508; file:line of each below), on
the paper's splits with the IM runs' data, transforms and weights."""
import pytest

from imlca.config import flatten, load_config
from imlca.config.sweep import load_sweep

from conftest import REPO

EASE = REPO / "sweeps" / "paper" / "ease"
AUTHORS = {  # key → (value, where in their repository)
    "train.momentum": (0.9, "models/ease.py get_optimizer: optim.SGD(..., momentum=0.9)"),
    "train.min_lr": (0.0, "exps/ease_*.json:21 min_lr 0, cosine :23"),
    "ease.adapter_scale": (0.1, "utils/inc_net.py:31 ffn_adapter_scalar='0.1'"),
    "ease.adapter_dropout": (0.1, "backbone/vit_ease.py:290 Adapter(..., dropout=0.1)"),
    "ease.optimizer": ("sgd", "exps/ease_*.json:22 (all but ObjectNet)"),
}
PER_BENCHMARK = {  # benchmark → (epochs, lr, batch, wd, r, α, use_init_ptm, β), exps/<file>:15,16,19,20,27,30,31,32
    "cifar100": ((20, 0.025, 48, 5e-4, 64, 0.1, False, 0.0), "ease_cifar.json"),
    "imagenet_r": ((20, 0.05, 16, 5e-3, 64, 0.1, False, 0.0), "ease_inr.json"),
    "imagenet_a": ((20, 0.05, 32, 5e-3, 64, 0.1, False, 0.0), "ease_ina.json"),
    "cub": ((20, 0.005, 16, 5e-4, 64, 0.005, True, 1.0), "ease_cub.json"),
    "omnibenchmark": ((20, 0.01, 16, 5e-4, 64, 1.0, True, 1.0), "ease_omni.json"),
    "vtab": ((45, 0.03, 16, 5e-3, 16, 0.1, False, 0.0), "ease_vtab.json"),
}


@pytest.mark.parametrize("benchmark", sorted(PER_BENCHMARK))
def test_ease_paper_config_is_the_authors(benchmark):
    cfg = load_config(EASE / f"{benchmark}.yaml")
    flat = flatten(cfg)
    for key, (value, source) in AUTHORS.items():
        assert flat[key] == value, f"{key}: {flat[key]!r}, authors {source}"
    values, source = PER_BENCHMARK[benchmark]
    t, e = cfg.train, cfg.ease
    assert (t.epochs, t.lr, t.batch_size, t.weight_decay, e.bottleneck, e.alpha, e.pretrained_subspace,
            e.beta) == values, source
    assert cfg.align.methods == ["ease"] and cfg.data.benchmark == benchmark and cfg.seed == 1993
    assert cfg.model.pretrained_tag == "augreg_in21k_ft_in1k" and cfg.model.backbone == "vit_base_patch16_224"
    im = load_config(REPO / "sweeps" / "paper" / f"{benchmark}.yaml")
    for key in ("data", "eval"):  # the same splits (10 tasks, VTAB 5, shuffled), transforms and evaluation as IM's
        assert getattr(cfg, key) == getattr(im, key)
    table1 = load_sweep(EASE.parent / "table1.yaml").cfg.space["case"]["grid"]
    assert f"ease/{benchmark}.yaml" in [case["file"] for case in table1]


def test_cars_has_no_authors_setting_and_is_searched_on_validation():
    sweep = load_sweep(EASE / "cars_search.yaml")
    assert sweep.cfg.metric == "val_avg_acc" and sweep.base_tree["data"]["val_fraction"] > 0
    assert sweep.base_tree["data"]["benchmark"] == "cars" and set(sweep.cfg.confirm_space) == {"seed"}
    assert not (EASE / "cars.yaml").exists()  # none until one is chosen there
