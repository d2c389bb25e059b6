"""MOS's paper configs hold its authors' values (sun-hailong/AAAI25-MOS @ 8d5e07c; file:line of each below), on
the paper's splits with the IM runs' data, transforms and weights."""
import pytest

from imlca.config import flatten, load_config
from imlca.config.sweep import load_sweep

from conftest import REPO

MOS = REPO / "sweeps" / "paper" / "mos"
AUTHORS = {  # key → (value, where in their repository)
    "train.momentum": (0.9, "models/mos.py:128 optim.SGD(..., momentum=0.9)"),
    "train.min_lr": (0.0, "exps/mos_*.json:19 min_lr 0, cosine :21"),
    "align.ridge": (1e-4, "models/mos.py:222 torch.cov(...) + 1e-4·I"),
    "mos.bottleneck": (16, "exps/mos_*.json:38 ffn_num (mos_inr.json:39)"),
    "mos.adapter_scale": (0.1, "utils/inc_net.py:21 ffn_adapter_scalar='0.1'"),
    "mos.adapter_dropout": (0.1, "backbone/vit_mos.py:269 Adapter(..., dropout=0.1)"),
    "mos.adapter_momentum": (0.1, "exps/mos_*.json:26"),
    "mos.reweight": ("every_forward", "backbone/vit_mos.py:360-377"),
    "mos.reg": (0.1, "exps/mos_*.json:25"),
    "mos.temperature": (0.8, "models/mos.py:346"),
    "mos.head_lr_scale": (0.1, "models/mos.py:122"),
    "mos.ca_epochs": (30, "exps/mos_*.json:29 crct_epochs (mos_inr.json:30)"),
    "mos.ca_lr": (0.005, "exps/mos_*.json:30 (mos_inr.json:31)"),
    "mos.ca_samples_factor": (5, "models/mos.py:261"),
    "mos.retrieval_rounds": (4, "models/mos.py:379 MAX_ITER"),
    "mos.ensemble": (True, "exps/mos_*.json:27"),
}
PER_BENCHMARK = {  # benchmark → (epochs, lr, batch, wd, statistics), exps/<file>:15,16,17,18,31 (mos_inr :32)
    "cifar100": ((20, 0.03, 48, 5e-4, "covariance"), "mos_cifar.json"),
    "imagenet_r": ((10, 0.05, 16, 5e-3, "covariance"), "mos_inr.json"),
    "imagenet_a": ((10, 0.05, 32, 5e-3, "variance"), "mos_ina.json"),
    "cub": ((10, 0.01, 32, 5e-4, "covariance"), "mos_cub.json"),
    "omnibenchmark": ((10, 0.01, 16, 5e-4, "covariance"), "mos_omni.json"),
    "vtab": ((20, 0.03, 32, 5e-3, "covariance"), "mos_vtab.json"),
}


@pytest.mark.parametrize("benchmark", sorted(PER_BENCHMARK))
def test_mos_paper_config_is_the_authors(benchmark):
    cfg = load_config(MOS / f"{benchmark}.yaml")
    flat = flatten(cfg)
    for key, (value, source) in AUTHORS.items():
        if key != "mos.statistics":
            assert flat[key] == value, f"{key}: {flat[key]!r}, authors {source}"
    values, source = PER_BENCHMARK[benchmark]
    t = cfg.train
    assert (t.epochs, t.lr, t.batch_size, t.weight_decay, cfg.mos.statistics) == values, source
    assert cfg.eval.batch_size == t.batch_size  # models/mos.py:91: their test loader's batch, which sets the drift
    assert cfg.align.methods == ["mos"] and cfg.data.benchmark == benchmark and cfg.seed == 1993
    assert cfg.model.pretrained_tag == "augreg_in21k_ft_in1k" and cfg.model.backbone == "vit_base_patch16_224"
    im = load_config(REPO / "sweeps" / "paper" / f"{benchmark}.yaml")
    assert cfg.data == im.data  # the same splits (10 tasks, VTAB 5, shuffled) and transforms as IM's
    table1 = load_sweep(MOS.parent / "table1.yaml").cfg.space["case"]["grid"]
    assert f"mos/{benchmark}.yaml" in [case["file"] for case in table1]


def test_cars_has_no_authors_setting_and_is_searched_on_validation():
    sweep = load_sweep(MOS / "cars_search.yaml")
    assert sweep.cfg.metric == "val_avg_acc" and sweep.base_tree["data"]["val_fraction"] > 0
    assert sweep.base_tree["data"]["benchmark"] == "cars" and set(sweep.cfg.confirm_space) == {"seed"}
    assert not (MOS / "cars.yaml").exists()  # none until one is chosen there
