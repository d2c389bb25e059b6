"""The method families' rows of tests/test_config_keys.py: what SLCA's, EASE's and MOS's keys change (their
training, SLCA's classifier alignment, EASE's scores and backbone passes, MOS's second task and its scores), and
the contexts those rows run in."""
from __future__ import annotations

import torch

from config_key_effects import Effect


def slca_training(cfg, assets):
    """SLCA's task 0 trained from the initial backbone: the epoch losses, the whole backbone, the head."""
    from imlca.engine.slca_runner import SLCARunner

    runner = SLCARunner(cfg)
    out = runner.train(0, runner.theta0())
    return {"losses": out.losses, "backbone": out.adapter, "head": out.head}


def slca_aligned(cfg, assets):
    """SLCA's central state through three tasks of 2, 3 and 3 classes (fixed heads and statistics, no images):
    each task's aligned heads and alignment loss."""
    from imlca.core.gaussian_bank import GaussianBank
    from imlca.engine.slca_state import SLCAState
    from imlca.engine.task_output import TaskOutput

    gen, dim, rows = torch.Generator().manual_seed(0), 8, []
    state = SLCAState(cfg, {"w": torch.zeros(1)}, dim)
    for task, (lo, hi) in enumerate([(0, 2), (2, 5), (5, 8)]):
        bank = GaussianBank(dim)
        labels = torch.arange(lo, hi).repeat_interleave(6)
        bank.update(torch.randn(len(labels), dim, generator=gen, dtype=torch.float64) + labels[:, None], labels)
        head = torch.randn(hi - lo, dim + 1, generator=gen) * 0.1
        _, heads = state.integrate(TaskOutput(task, {"w": torch.zeros(1)}, head, bank.state_dict(), [0.5]))
        rows.append((torch.cat(heads["slca"]), state.align_loss["slca"]["loss"][-1]))
    return rows


def ease_training(cfg, assets):
    """EASE's task 0 and task 1 trained (fresh adapter sets, proxy heads): the losses, the sets, the raw
    prototypes in every subspace."""
    from imlca.engine.ease_runner import EASERunner

    runner = EASERunner(cfg)
    first = runner.train(0, {})
    second = runner.train(1, {f"0.{k}": v for k, v in first.adapter.items()})
    return [{"losses": out.losses, "adapter": out.adapter, "prototypes": out.head} for out in (first, second)]


def ease_scores(cfg, assets):
    """EASE's logits for fixed features and raw prototypes of three tasks (the centre completes them)."""
    from imlca.core.gaussian_bank import GaussianBank
    from imlca.engine.ease_runner import ease_logits
    from imlca.engine.ease_state import EASEState
    from imlca.engine.task_output import TaskOutput

    gen, dim, p = torch.Generator().manual_seed(0), 4, int(cfg.ease.pretrained_subspace)
    state = EASEState(cfg, {}, dim)
    stats = GaussianBank(dim).state_dict()  # no statistics: EASE's centre does not read them
    for task in range(3):
        raw = torch.randn(2, (task + 1 + p) * dim, generator=gen)
        _, heads = state.integrate(TaskOutput(task, {"w": torch.zeros(1)}, raw, stats, [0.5]))
    return ease_logits(cfg, torch.randn(5, (3 + p) * dim, generator=gen), heads["ease"])


def ease_passes(cfg, assets):
    """The backbone passes over one task's test images in two tasks' evaluations, and their accuracy rows."""
    from imlca.engine.ease_runner import EASERunner
    from imlca.engine.ease_state import EASEState

    runner = EASERunner(cfg)
    state, rows = EASEState(cfg, {}, runner.model.dim), []
    for task in (0, 1):
        weights, heads = state.integrate(runner.train(task, state.train_input()))
        rows.append(runner.evaluate(task, weights, heads)["test"])
    return runner.passes, rows


def mos_training(cfg, assets):
    """MOS's task 0 from the initial adapter and head: the losses, the adapters handed back, the head, the bank."""
    from imlca.engine.mos_runner import MOSRunner

    runner = MOSRunner(cfg)
    out = runner.train(0, runner.theta0())
    return {"losses": out.losses, "adapter": out.adapter, "head": out.head, "statistics": out.statistics}


def mos_second_task(cfg, assets):
    """MOS through two tasks: task 1's adapters, the aligned head and its loss, and the scores of task 1's
    evaluation (retrieval and ensemble)."""
    from imlca.engine.mos_runner import MOSRunner
    from imlca.engine.mos_state import MOSState

    runner = MOSRunner(cfg)
    state = MOSState(cfg, runner.theta0(), runner.model.dim)
    for task in (0, 1):
        out = runner.train(task, state.train_input())
        weights, heads = state.integrate(out)
    scores, _ = runner.predictor.scores(1, weights, heads, runner._loader("test", range(2), runner.test_tf))
    return {"adapter": out.adapter, "head": state.head, "loss": state.align_loss["mos"]["loss"], "scores": scores}


SLCA = {"align.method": "slca", "align.compare": [], "train.epochs": 2, "slca.milestones": [1]}
EASE = {"align.method": "ease", "train.epochs": 1}
MOS = {"align.method": "mos", "train.epochs": 1}
MOS_CA = {**MOS, "mos.ca_epochs": 2}
SLCA_CA = {"align.method": "slca", "align.compare": [], "slca.ca_samples_per_class": 8, "slca.ca_epochs": 2}  # half tiny's training; the cosine schedule still moves from lr towards min_lr


FAMILY_EFFECTS: dict[str, Effect] = {  # after the other rows of EFFECTS, in this order
    "ease.bottleneck": Effect(8, ease_training, EASE),
    "ease.adapter_scale": Effect(1.0, ease_training, EASE),
    "ease.adapter_dropout": Effect(0.5, ease_training, EASE),
    "ease.optimizer": Effect("adam", ease_training, EASE),
    "ease.pretrained_subspace": Effect(True, ease_training, EASE),
    "ease.alpha": Effect(0.5, ease_scores, EASE),
    "ease.beta": Effect(1.0, ease_scores, {**EASE, "ease.pretrained_subspace": True}),
    "ease.cache_features": Effect(False, ease_passes, EASE),
    "mos.bottleneck": Effect(8, mos_training, MOS),
    "mos.adapter_scale": Effect(1.0, mos_training, MOS),
    "mos.adapter_dropout": Effect(0.5, mos_training, MOS),
    "mos.adapter_momentum": Effect(0.5, mos_second_task, MOS_CA),
    "mos.reweight": Effect("once_per_step", mos_second_task, MOS_CA),
    "mos.reg": Effect(1.0, mos_training, MOS),
    "mos.temperature": Effect(0.1, mos_training, MOS),
    "mos.head_lr_scale": Effect(1.0, mos_training, MOS),
    "mos.statistics": Effect("variance", mos_second_task, MOS_CA),
    "mos.ca_epochs": Effect(1, mos_second_task, MOS_CA),
    "mos.ca_lr": Effect(0.05, mos_second_task, MOS_CA),
    "mos.ca_samples_factor": Effect(2, mos_second_task, MOS_CA),
    "mos.retrieval_rounds": Effect(1, mos_second_task, MOS_CA),
    "mos.ensemble": Effect(False, mos_second_task, MOS_CA),
    "slca.backbone_lr_scale": Effect(0.1, slca_training, SLCA),
    "slca.milestones": Effect([], slca_training, SLCA),
    "slca.lr_decay": Effect(0.5, slca_training, SLCA),
    # a checkpoint's norm (timm's random init is already weight 1, bias 0)
    "slca.fresh_final_norm": Effect(True, slca_training, {**SLCA, "model.checkpoint": "{tmp}/backbone.safetensors"}),
    "slca.ca_epochs": Effect(1, slca_aligned, SLCA_CA),
    "slca.ca_lr": Effect(0.05, slca_aligned, SLCA_CA),
    "slca.ca_samples_per_class": Effect(4, slca_aligned, SLCA_CA),
    "slca.logit_norm_temperature": Effect(None, slca_aligned, SLCA_CA),
    "slca.true_task_ids": Effect(True, slca_aligned, SLCA_CA),
}
