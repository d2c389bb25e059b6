"""Method families as a choice: SLCA beside IM through the one protocol loop (the in-process/Ray equality, resume
and chaos tests of each family are in test_distributed.py, test_protocol.py and test_chaos.py)."""
import pytest
import torch

from imlca.config import load_config
from imlca.config.sweep import Sweep, SweepConfig
from imlca.engine.protocol import run_protocol
from imlca.errors import ConfigError
from imlca.registries import FAMILIES, METHODS

from conftest import REPO, TINY, tiny_family_overrides, tiny_overrides


def test_every_method_names_a_family_and_every_family_has_a_method():
    assert {spec.family for spec in METHODS.values()} == set(FAMILIES)
    assert [m for m, spec in METHODS.items() if spec.family == "im"] == ["im", "im_ca", "im_lca"]


def test_an_slca_run_trains_the_whole_backbone_and_aligns_from_the_second_task(tiny_slca_run):
    run = tiny_slca_run
    assert run.methods == ["slca"]  # tiny.yaml's compare (im, im_ca) is of the IM family: not this run's
    assert [len(r) for r in run.acc["slca"]] == [1, 2, 3]
    assert all(0 <= v <= 100 and (v * 40) % 1 == 0 for r in run.acc["slca"] for v in r)  # 40 images per task
    first, last = run.reports[0], run.reports[-1]
    assert first["align_loss"] != first["align_loss"] and last["align_loss"] > 0  # NaN at task 0: no alignment
    assert last["avg_acc_weighted"] == pytest.approx(last["avg_acc"])  # balanced test sets: PILOT's Ā = the paper's
    assert "forgetting" in last and "forgetting_authors" in last
    assert any(k.startswith("blocks.0.attn.qkv") for k in run.merged)  # the whole backbone, not an adapter
    assert [tuple(h.shape) for h in run.heads["slca"]] == [(2, 33), (2, 33), (2, 33)]  # [n_t, D + bias]


def test_slca_trains_the_backbone_slowly_and_freezes_it_at_scale_zero():
    from imlca.engine.slca_runner import SLCARunner

    cfg = load_config(TINY, tiny_overrides(**{"align.method": "slca", "train.epochs": 1}))
    runner = SLCARunner(cfg)
    start = runner.theta0()
    moved = runner.train(0, start)
    assert not torch.equal(moved.adapter["blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])
    frozen = SLCARunner(load_config(TINY, tiny_overrides(**{"align.method": "slca", "train.epochs": 1,
                                                            "slca.backbone_lr_scale": 0.0})))
    out = frozen.train(0, start)
    assert all(torch.equal(out.adapter[k], v) for k, v in start.items())
    assert not torch.equal(out.head, frozen._new_head(2, 0))  # the head trains either way
    assert out.head.shape == (2, 33) and out.losses[-1] > 0


def test_a_key_of_another_family_is_refused_at_config_time():
    with pytest.raises(ConfigError, match="slca.logit_norm_temperature.*align.method=slca"):
        load_config(TINY, tiny_overrides(**{"slca.logit_norm_temperature": 0.05}))
    cfg = load_config(TINY, tiny_overrides(**{"align.method": "slca", "slca.logit_norm_temperature": 0.05}))
    assert cfg.align.family == "slca" and cfg.align.methods == ["slca"]


def test_method_is_a_grid_axis_across_families_and_a_cached_sweep_is_im_only():
    Sweep(SweepConfig(space={"align.method": {"grid": ["im_lca", "slca"]}}), "s", _tiny_tree()).validate()
    cached = Sweep(SweepConfig(space={"align.method": {"grid": ["im_lca", "slca"]}},
                               align_space={"align.lam": {"grid": [0.0, 0.1]}}), "s", _tiny_tree())
    with pytest.raises(ConfigError, match="align.method"):
        cached.validate()


def _tiny_tree():
    from imlca.config import read_config_tree

    return read_config_tree(TINY)


def test_the_embedded_rivals_sweep_chooses_each_familys_lr_on_validation_then_runs_three_seeds():
    from imlca.config.sweep import load_sweep

    sweep = load_sweep(REPO / "sweeps" / "embedded_rivals.yaml")
    assert sweep.cfg.space["align.method"] == {"grid": ["im_lca", "slca", "ease", "mos"]} and "train.lr" in sweep.cfg.space
    assert sweep.cfg.metric == "val_avg_acc" and sweep.cfg.confirm_per == ["align.method"]
    assert sweep.cfg.confirm_space == {"seed": {"grid": [1993, 1994, 1995]}}
    assert sweep.base_tree["model"]["backbone"] == "tf_efficientnet_lite0"


def test_an_ease_run_keeps_one_adapter_set_per_task_and_prototypes_in_every_subspace(tiny_ease_run):
    run = tiny_ease_run
    assert run.methods == ["ease"] and [len(r) for r in run.acc["ease"]] == [1, 2, 3]
    assert all(0 <= v <= 100 and (v * 40) % 1 == 0 for r in run.acc["ease"] for v in r)  # 40 images per task
    sets = {k.split(".", 1)[0] for k in run.merged}
    assert sets == {"0", "1", "2"}  # three frozen adapter sets, `<j>.<site>.<down|up>.<weight|bias>`
    assert [tuple(h.shape) for h in run.heads["ease"]] == [(2, 96)] * 3  # completed: 3 subspaces × D = 32
    assert run.heads["ease"][0][:, 32:].abs().sum() > 0  # task 0's classes complemented in the newer subspaces


def test_ease_cached_features_give_the_recomputed_numbers_with_fewer_passes(tiny_ease_run):
    """Frozen adapters' test features kept on the worker: the same accuracies as recomputing them every task,
    and 2t + 1 new (task, subspace) passes at task t instead of (t + 1)²."""
    from imlca.engine.ease_runner import EASERunner
    from imlca.engine.ease_state import EASEState

    cfg = load_config(TINY, tiny_family_overrides("ease") + ["ease.cache_features=false"])
    recomputed = run_protocol(cfg)
    assert recomputed.acc == tiny_ease_run.acc
    runner = EASERunner(load_config(TINY, tiny_family_overrides("ease")))
    state, passes = EASEState(runner.cfg, {}, runner.model.dim), []
    for task in range(3):
        runner.evaluate(task, *state.integrate(runner.train(task, state.train_input())))
        passes.append(runner.passes)
    assert passes == [1, 1 + 3, 1 + 3 + 5]


def test_an_adapter_family_needs_an_adapter_definition_and_a_bottleneck_no_wider_than_the_blocks(monkeypatch):
    from imlca.registries import BACKBONES, BackboneSpec

    monkeypatch.setitem(BACKBONES, "plain_vit", BackboneSpec("vit_tiny_patch16_224", "qkv", sized=True))
    with pytest.raises(ConfigError, match=r"'model.backbone': plain_vit has no adapter definition"):
        load_config(TINY, ["align.method=ease", "model.backbone=plain_vit"])
    load_config(TINY, ["model.backbone=plain_vit"])  # IM needs none
    with pytest.raises(ConfigError, match=r"'ease.bottleneck': 32 is wider than tf_efficientnet_lite0's narrowest"):
        load_config(TINY, ["align.method=ease", "model.backbone=tf_efficientnet_lite0", "ease.bottleneck=32"])


def test_the_cnn_adapter_is_a_parallel_bottleneck_per_block_that_starts_as_the_identity():
    """Lite0's convolutional analogue: every block (strided ones included) gets block(x) + s·up(ReLU(down(x)));
    fresh, the features are the plain backbone's; a non-zero `up` changes them."""
    from imlca.models.adapters import read_set, sites
    from imlca.models.backbone import create_backbone
    from imlca.models.model import build_adapter_model

    cfg = load_config(TINY, ["align.method=ease", "model.backbone=tf_efficientnet_lite0", "data.image_size=32"])
    model = build_adapter_model(cfg, 16, 0.1, 0.1)
    torch.manual_seed(cfg.seed)
    plain = create_backbone("tf_efficientnet_lite0", False, None, 32).eval()
    x = torch.rand(2, 3, 32, 32)
    expected = plain.forward_head(plain.forward_features(x), pre_logits=True)
    assert torch.allclose(model.features(x), expected, atol=1e-6)
    assert len(sites(model.backbone)) == 16 and {v.shape[0] for k, v in read_set(model.backbone).items()
                                                  if k.endswith("down.weight")} == {16}
    with torch.no_grad():
        for site in sites(model.backbone).values():
            site.adapter.up.weight.normal_()
    assert not torch.allclose(model.features(x), expected, atol=1e-3)
    assert [n for n, p in model.named_parameters() if p.requires_grad] and \
        all(".adapter." in n for n, p in model.named_parameters() if p.requires_grad)


def test_a_mos_run_keeps_a_snapshot_per_task_and_one_head_with_prototypes(tiny_mos_run):
    run = tiny_mos_run
    assert run.methods == ["mos"] and [len(r) for r in run.acc["mos"]] == [1, 2, 3]
    assert all(0 <= v <= 100 and (v * 40) % 1 == 0 for r in run.acc["mos"] for v in r)  # 40 images per task
    # one snapshot per task, and what the next task would train from
    assert {k.split(".", 1)[0] for k in run.merged} == {"0", "1", "2", "current", "mean", "adapter0", "head",
                                                         "old_means"}
    assert run.merged["old_means"].shape == (6, 32) and run.merged["head"].shape == (6, 33)
    assert [tuple(h.shape) for h in run.heads["mos"]] == [(2, 65)] * 3  # [prototypes | weight | bias], D = 32
    first, last = run.reports[0], run.reports[-1]
    assert first["align_loss"] != first["align_loss"] and last["align_loss"] > 0  # aligned from task 1 on


def test_a_mos_runs_artifacts_hold_its_weights_though_two_names_share_its_first_snapshot(tiny_mos_run, tmp_path):
    """What `--track` and a sweep's trials write: safetensors refuses tensors that share memory, and MOS's weights
    name the first snapshot as `0.*` and `adapter0.*`."""
    from safetensors.torch import load_file

    from imlca.engine.artifacts import write_run

    merged = tiny_mos_run.merged
    assert any(merged[k].data_ptr() == merged["adapter0." + k[2:]].data_ptr() for k in merged if k.startswith("0."))
    write_run(tmp_path, load_config(TINY, tiny_family_overrides("mos")), tiny_mos_run)
    written = load_file(str(tmp_path / "adapter.safetensors"))
    assert written.keys() == merged.keys() and all(torch.equal(written[k], merged[k]) for k in merged)


def test_mos_stored_adapters_drift_only_with_the_authors_reweighting():
    """every_forward: a stored adapter k ≥ 1 has been pulled once per block for each earlier test batch (none
    for adapter 0); once_per_step: never."""
    from imlca.engine.mos_runner import MOSRunner

    runner = MOSRunner(load_config(TINY, tiny_family_overrides("mos") + ["eval.batch_size=16"]))
    # 40 test images per task, 2 blocks; adapter k is first used by task k's evaluation, which runs ⌈40(k + 1)/16⌉
    # batches: before task 2's, adapter 1 has seen task 1's 5 batches; before task 3's, tasks 1 and 2's (5 + 8)
    assert runner.predictor.pulls_before(2) == [0, 2 * 5, 0]
    assert runner.predictor.pulls_before(3) == [0, 2 * (5 + 8), 2 * 8, 0]
    frozen = MOSRunner(load_config(TINY, tiny_family_overrides("mos") + ["mos.reweight=once_per_step"]))
    assert frozen.predictor.pulls_before(2) == [0, 0, 0]


def test_mos_robustness_scores_clean_copies_at_its_last_accuracy_with_frozen_snapshots(tmp_path):
    """The robustness predictor is MOS's prediction: with `once_per_step` (stored snapshots frozen) a corruption
    folder holding the clean test images scores exactly the last accuracy."""
    import numpy as np

    from imlca.data.synthetic import TEST_PER_CLASS, make_images

    test = make_images(TEST_PER_CLASS, seed=2)  # the synthetic benchmark's test set
    c_dir = tmp_path / "c"
    c_dir.mkdir()
    np.save(c_dir / "fog.npy", test.images.permute(0, 2, 3, 1).numpy())
    np.save(c_dir / "labels.npy", test.labels)
    cfg = load_config(TINY, tiny_family_overrides("mos") + [
        "data.task_sizes=[2, 4]", "mos.reweight=once_per_step", "train.epochs=1", "mos.ca_epochs=2",
        f"robustness.corruptions_dir={c_dir}"])
    result = run_protocol(cfg)
    overall = sum(r * n for r, n in zip(result.acc["mos"][-1], (2, 4))) / 6  # 20 images per class
    assert result.reports[-1]["mos/c_mean"] == pytest.approx(overall, abs=1e-9)
