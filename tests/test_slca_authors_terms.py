"""SLCA against a transcription of its authors' code (github.com/GengDavid/SLCA @ 169d4e6, models/slca.py; the
same algorithm as LAMDA-PILOT's port) on a tiny ViT in float64: the slow learner's loss and gradient step, the
classifier alignment's loss with logit normalisation and its whole loop, and the heads restored after each
evaluation (`fc.backup()` / `fc.recall()`)."""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from imlca.config import SLCAConfig, TrainConfig, load_config
from imlca.core.gaussian_bank import GaussianBank
from imlca.core.slca import affine_logits, align_slca_heads, authors_task_ids, ca_loss, mean_shrink
from imlca.engine.loops import run_epochs
from imlca.engine.slca_runner import slow_learner
from imlca.engine.seeding import generator
from imlca.engine.slca_state import SLCAState
from imlca.engine.task_output import TaskOutput

from conftest import TINY, tiny_overrides

D = 32


class TheirNet(nn.Module):
    """FinetuneIncrementalNet: convnet → CLS feature; SimpleContinualLinear: one nn.Linear(D, n_t) per task."""

    def __init__(self, convnet, heads):
        super().__init__()
        self.convnet, self.heads = convnet, nn.ModuleList(heads)

    def forward(self, x, fc_only=False):
        feats = x if fc_only else self.convnet.forward_features(x)[:, 0]
        return {"logits": torch.cat([h(feats) for h in self.heads], dim=1)}


class Features(nn.Module):
    """Ours: IncrementalModel.features on the same timm ViT."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def features(self, x):
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)


def _vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=16, patch_size=8,
                             depth=2, embed_dim=D, num_heads=2).double().eval()


def _linear(n, seed):
    torch.manual_seed(seed)
    head = nn.Linear(D, n).double()
    nn.init.trunc_normal_(head.weight, std=0.02)
    nn.init.constant_(head.bias, 0)
    return head


def _affine(linear):
    return torch.cat([linear.weight, linear.bias[:, None]], dim=1).detach().clone()


def test_the_slow_learner_step_is_theirs():
    """_stage1_training + _run: backbone at lrate·bcb_lrscale, head at lrate, SGD momentum 0.9 wd 5e-4,
    MultiStepLR; CE on logits[:, known:] with targets − known; the old head frozen."""
    old, new = _linear(2, 1), _linear(3, 2)
    theirs = TheirNet(_vit(), [old, new])
    ours_backbone, ours_head = copy.deepcopy(theirs.convnet), nn.Parameter(_affine(new))
    for p in theirs.heads[0].parameters():
        p.requires_grad = False  # freeze_old
    torch.manual_seed(3)
    images, targets = torch.rand(6, 3, 16, 16, dtype=torch.float64), torch.tensor([2, 3, 4, 2, 3, 4])
    known, lrate, epochs = 2, 0.05, 2
    groups = [{"params": theirs.convnet.parameters(), "lr": lrate / 100, "weight_decay": 5e-4},
              {"params": [p for p in theirs.heads.parameters() if p.requires_grad], "lr": lrate,
               "weight_decay": 5e-4}]
    optimizer = torch.optim.SGD(groups, lr=lrate, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer=optimizer, milestones=[1], gamma=0.1)
    their_losses = []
    for _ in range(epochs):
        logits = theirs(images)["logits"]
        cur_targets = torch.where(targets - known >= 0, targets - known, -100)
        loss = F.cross_entropy(logits[:, known:], cur_targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        their_losses.append(loss.item())

    train = TrainConfig(epochs=epochs, lr=lrate, min_lr=0.0)
    opt, schedule = slow_learner(ours_backbone, ours_head, train, SLCAConfig(milestones=[1]))
    ours = run_epochs(Features(ours_backbone), ours_head, [(images, targets)], known, train, torch.device("cpu"),
                      opt, schedule, logits_of=affine_logits)
    assert ours == pytest.approx(their_losses, rel=1e-6)
    assert torch.allclose(ours_head.detach(), _affine(theirs.heads[1]), atol=1e-7)
    for (name, a), b in zip(ours_backbone.named_parameters(), theirs.convnet.parameters()):
        assert torch.allclose(a, b, atol=1e-9), name  # (their loss is fp64, ours cast to fp32: same step sizes)
    assert torch.equal(_affine(theirs.heads[0]), _affine(old))  # the old head did not move
    assert not torch.equal(_affine(new), ours_head.detach())  # the new head did


def _their_ca_loss(logits, tgt, task_sizes, cur_task, crct_num, logit_norm):
    """models/slca.py:218-235."""
    per_task_norm, prev_t_size, cur_t_size = [], 0, 0
    for _ti in range(cur_task + 1):
        cur_t_size += task_sizes[_ti]
        per_task_norm.append(torch.norm(logits[:, prev_t_size:cur_t_size], p=2, dim=-1, keepdim=True) + 1e-7)
        prev_t_size += task_sizes[_ti]
    norms = torch.cat(per_task_norm, dim=-1).mean(dim=-1, keepdim=True)
    return F.cross_entropy(torch.div(logits[:, :crct_num], norms) / logit_norm, tgt)


@pytest.mark.parametrize("tau", [0.1, 0.05, None])
def test_the_ca_loss_and_its_gradient_are_theirs(tau):
    torch.manual_seed(5)
    sizes = [2, 3, 2]
    weight = torch.randn(7, D + 1, dtype=torch.float64, requires_grad=True)
    z, y = torch.randn(16, D, dtype=torch.float64), torch.randint(0, 7, (16,))
    ours = ca_loss(affine_logits(z, weight), y, sizes, tau)
    (g_ours,) = torch.autograd.grad(ours, weight)
    logits = z @ weight[:, :-1].T + weight[:, -1]
    theirs = (_their_ca_loss(logits, y, sizes, 2, 7, tau) if tau is not None
              else F.cross_entropy(logits[:, :7], y))
    (g_theirs,) = torch.autograd.grad(theirs, weight)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-10, atol=1e-14)


def test_the_mean_shrink_is_theirs_with_the_current_task_size():
    """decay = (c // task_size + 1)/(cur_task + 1)·0.1, task_size the current task's (Cars: 16 then 20s)."""
    sizes, cur_task = [16, 20, 20], 2
    theirs = [0.9 + (c // sizes[-1] + 1) / (cur_task + 1) * 0.1 for c in range(56)]
    assert mean_shrink(authors_task_ids(56, sizes[-1]), cur_task) == theirs
    assert mean_shrink(authors_task_ids(56, 20), 2)[15:17] == [0.9 + 1 / 30, 0.9 + 1 / 30]  # class 16 is task 1's


def _bank(sizes, seed=7):
    torch.manual_seed(seed)
    bank = GaussianBank(D)
    c = sum(sizes)
    bank.update(torch.randn(c * 12, D, dtype=torch.float64) + torch.arange(c).repeat_interleave(12)[:, None] / 3,
                torch.arange(c).repeat_interleave(12))
    return bank


def _their_ca_loop(heads, bank, sizes, cur_task, samples, epochs, lr, tau, gen):
    """_stage2_compact_classifier on their SimpleContinualLinear, the Gaussian draws replayed from `gen` in our
    order (MultivariateNormal draws in theirs: the same distribution, not the same numbers)."""
    fc = nn.ModuleList(heads)
    for p in fc.parameters():
        p.requires_grad = True
    crct_num = sum(sizes)
    optimizer = torch.optim.SGD([{"params": list(fc.parameters()), "lr": lr, "weight_decay": 5e-4}], lr=lr,
                                momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer=optimizer, T_max=epochs)
    shrink = [0.9 + (c // sizes[-1] + 1) / (cur_task + 1) * 0.1 for c in range(crct_num)]
    for _ in range(epochs):
        inputs, targets = bank.sample(list(range(crct_num)), samples, gen, mean_scale=shrink)
        sf_indexes = torch.randperm(inputs.size(0), generator=gen)
        inputs, targets = inputs[sf_indexes], targets[sf_indexes]
        for _iter in range(crct_num):
            inp = inputs[_iter * samples:(_iter + 1) * samples]
            tgt = targets[_iter * samples:(_iter + 1) * samples]
            logits = torch.cat([h(inp) for h in fc], dim=1)
            loss = _their_ca_loss(logits, tgt, sizes, cur_task, crct_num, tau)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
    return [_affine(h) for h in fc]


def test_the_alignment_loop_is_theirs():
    sizes = [2, 3, 2]
    heads = [_linear(n, 10 + t).float() for t, n in enumerate(sizes)]
    bank = _bank(sizes)
    start = torch.cat([_affine(h) for h in heads])
    ours, history = align_slca_heads(start, bank, sizes, mean_shrink(authors_task_ids(7, 2), 2), 16, 3, 0.01, 0.9,
                                     5e-4, 0.1, torch.Generator().manual_seed(4))
    theirs = _their_ca_loop(heads, bank, sizes, 2, 16, 3, 0.01, 0.1, torch.Generator().manual_seed(4))
    assert torch.allclose(ours, torch.cat(theirs), atol=1e-6)
    assert len(history) == 3 and not torch.equal(ours, start)


def test_heads_are_restored_after_each_evaluation():
    """Their after_task calls fc.recall(): each task's CA starts from the heads as trained, never the aligned."""
    cfg = load_config(TINY, tiny_overrides(**{"align.method": "slca", "slca.ca_epochs": 2,
                                             "slca.ca_samples_per_class": 8}))
    sizes, bank = [2, 2, 2], _bank([2, 2, 2])
    stats = [{k: v[2 * t:2 * t + 2] for k, v in bank.state_dict().items()} for t in range(3)]  # task t's classes
    trained = [torch.cat([torch.randn(2, D, generator=torch.Generator().manual_seed(t)), torch.zeros(2, 1)], 1)
               for t in range(3)]
    state = SLCAState(cfg, {"w": torch.zeros(1)}, D)
    for t in range(3):
        weights, heads = state.integrate(TaskOutput(t, {"w": torch.full((1,), float(t))}, trained[t],
                                                    stats[t], [0.5]))
        assert all(torch.equal(a, b) for a, b in zip(state.heads["slca"], trained[: t + 1]))  # as trained
        if t == 0:
            assert all(torch.equal(a, b) for a, b in zip(heads["slca"], trained[:1]))  # no CA on the first task
        else:
            expected, _ = align_slca_heads(torch.cat(trained[: t + 1]), state.bank, sizes[: t + 1],
                                           mean_shrink(authors_task_ids(2 * t + 2, 2), t), 8, 2, 0.01, 0.9, 5e-4,
                                           0.1, generator(cfg.seed, "align", t))
            assert torch.equal(torch.cat(heads["slca"]), expected)
    assert torch.equal(weights["w"], torch.full((1,), 2.0))  # the latest backbone replaces the last

