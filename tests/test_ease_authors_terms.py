"""EASE against a transcription of its authors' code (github.com/sun-hailong/CVPR24-Ease: backbone/vit_ease.py
Adapter and Block, models/ease.py `_init_train`, `replace_fc` and `solve_sim_reset`, backbone/linears.py
CosineLinear and `forward_reweight`) on a tiny ViT in float64: the adapted forward, the training loss and its
gradient steps, the prototype complement and the reweighted prediction."""
import copy
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from imlca.config import TrainConfig
from imlca.core.ease import class_means, complete, cosine_logits, reweighted_logits
from imlca.engine.ease_runner import proxy_optimizer
from imlca.engine.loops import run_epochs
from imlca.models.adapters import adapter_parameters, attach_adapters, sites

from timm_features import Ours

D, R = 32, 8


class TheirAdapter(nn.Module):
    """vit_ease.Adapter with init_option "lora", adapter_layernorm_option "none", scalar 0.1, dropout 0.1."""

    def __init__(self):
        super().__init__()
        self.down_proj, self.up_proj, self.scale, self.dropout = nn.Linear(D, R), nn.Linear(R, D), 0.1, 0.1

    def forward(self, x):
        down = nn.functional.dropout(F.relu(self.down_proj(x)), p=self.dropout, training=self.training)
        return self.up_proj(down) * self.scale  # add_residual=False


class TheirViT(nn.Module):
    """vit_ease Block.forward with ffn_option "parallel" around the timm blocks' own modules; CLS after norm."""

    def __init__(self, vit, adapters):
        super().__init__()
        self.vit, self.adapters = vit, nn.ModuleList(adapters)

    def forward(self, x):
        vit = self.vit
        x = vit._pos_embed(vit.patch_embed(x))
        for blk, adapt in zip(vit.blocks, self.adapters):
            x = x + blk.attn(blk.norm1(x))
            adapt_x = adapt(x)
            residual = x
            x = blk.mlp.fc2(blk.mlp.act(blk.mlp.fc1(blk.norm2(x))))
            x = residual + (x + adapt_x)
        return vit.norm(x)[:, 0]


def _pair():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=16, patch_size=8,
                            depth=2, embed_dim=D, num_heads=2).double().eval()
    ours = attach_adapters(copy.deepcopy(vit), "vit_test_tiny", R, 0.1, 0.1).double()
    theirs = []
    for site in sites(ours).values():
        with torch.no_grad():
            site.adapter.up.weight.normal_(0, 0.3)  # a trained-looking adapter: zero-init up would hide it
        adapter = TheirAdapter().double()
        adapter.down_proj.load_state_dict(site.adapter.down.state_dict())
        adapter.up_proj.load_state_dict(site.adapter.up.state_dict())
        theirs.append(adapter)
    return TheirViT(vit, theirs), Ours(ours)


def test_a_fresh_adapter_is_theirs_and_leaves_the_backbone_unchanged():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=16, patch_size=8,
                            depth=2, embed_dim=D, num_heads=2).double().eval()
    plain = vit.forward_head(vit.forward_features(torch.ones(2, 3, 16, 16, dtype=torch.float64)), pre_logits=True)
    ours = attach_adapters(copy.deepcopy(vit), "vit_test_tiny", R, 0.1, 0.1).double().eval()
    x = torch.ones(2, 3, 16, 16, dtype=torch.float64)
    assert torch.equal(Ours(ours).features(x), plain)
    adapter = next(iter(sites(ours).values())).adapter
    torch.manual_seed(5)
    theirs = nn.init.kaiming_uniform_(torch.empty(R, D, dtype=torch.float64), a=math.sqrt(5))  # their "lora" init
    torch.manual_seed(5)
    adapter.reset()
    assert torch.equal(adapter.down.weight, theirs) and not adapter.up.weight.any()
    assert not adapter.down.bias.any() and not adapter.up.bias.any()
    assert all(not p.requires_grad for n, p in ours.named_parameters() if ".adapter." not in n)


def test_the_proxy_training_is_theirs():
    """_init_train: SGD momentum 0.9 with weight decay on the adapter, the cosine head and σ; CosineAnnealing to 0;
    CE on σ·cos(f, w) with targets − known; the network in train mode (the adapters' dropout acts)."""
    theirs, ours = _pair()
    torch.manual_seed(7)
    weight = (torch.rand(3, D, dtype=torch.float64) * 2 - 1) / math.sqrt(D)
    their_w, their_sigma = nn.Parameter(weight.clone()), nn.Parameter(torch.ones(1, dtype=torch.float64))
    our_w, our_sigma = nn.Parameter(weight.clone()), nn.Parameter(torch.ones((), dtype=torch.float64))
    images, targets = torch.rand(6, 3, 16, 16, dtype=torch.float64), torch.tensor([2, 3, 4, 2, 3, 4])
    known, lr, wd, epochs = 2, 0.05, 5e-3, 2
    ours.eval(), theirs.eval()
    assert torch.allclose(ours.features(images), theirs(images), rtol=0, atol=1e-13)  # the adapted forward
    params = [p for p in theirs.adapters.parameters()] + [their_w, their_sigma]
    optimizer = torch.optim.SGD(params, momentum=0.9, lr=lr, weight_decay=wd)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0)
    theirs.train()
    torch.manual_seed(11)
    their_losses = []
    for _ in range(epochs):
        logits = their_sigma * F.linear(F.normalize(theirs(images), p=2, dim=1), F.normalize(their_w, p=2, dim=1))
        loss = F.cross_entropy(logits, torch.where(targets - known >= 0, targets - known, -1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        their_losses.append(loss.item())
        schedule.step()
    cfg = TrainConfig(epochs=epochs, lr=lr, weight_decay=wd, min_lr=0.0, momentum=0.9)
    from types import SimpleNamespace
    opt, sched = proxy_optimizer(adapter_parameters(ours.backbone) + [our_w, our_sigma],
                                 SimpleNamespace(train=cfg), "sgd")
    ours.eval()
    for site in sites(ours.backbone).values():
        site.adapter.train()
    torch.manual_seed(11)
    losses = run_epochs(ours, our_w, [(images, targets)], known, cfg, torch.device("cpu"), opt, sched,
                        logits_of=lambda f, w: cosine_logits(f, w, our_sigma))
    # run_epochs takes the cross-entropy of float32 logits (every family's training): float32 agreement
    assert losses == pytest.approx(their_losses, rel=1e-6)
    for site, adapter in zip(sites(ours.backbone).values(), theirs.adapters):
        assert torch.allclose(site.adapter.down.weight, adapter.down_proj.weight, rtol=0, atol=1e-7)
        assert torch.allclose(site.adapter.up.weight, adapter.up_proj.weight, rtol=0, atol=1e-7)
        assert site.adapter.up.weight.abs().sum() > 0
    assert torch.allclose(our_w, their_w, rtol=0, atol=1e-7)
    assert our_sigma.item() == pytest.approx(their_sigma.item(), abs=1e-7) and our_sigma.item() != 1.0
    ours.eval(), theirs.eval()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    assert torch.allclose(ours.features(x), theirs(x), rtol=0, atol=1e-6)  # the adapted forward, trained


def their_complement(fc, init_cls, inc, cur_task, out_dim, use_init_ptm):
    """models/ease.py solve_sim_reset (loops as written; fc.weight.data changed in place)."""
    fc = fc.clone()
    total = init_cls + cur_task * inc
    for task_id in range(cur_task):
        range_dim = range(task_id + 2, cur_task + 2) if use_init_ptm else range(task_id + 1, cur_task + 1)
        for dim_id in range_dim:
            start_cls = 0 if task_id == 0 else init_cls + (task_id - 1) * inc
            end_cls = start_cls + (init_cls if task_id == 0 else inc)
            start_dim, end_dim = dim_id * out_dim, (dim_id + 1) * out_dim
            if use_init_ptm:
                start_cls_old = init_cls + (dim_id - 2) * inc
                start_dim_old, end_dim_old = (task_id + 1) * out_dim, (task_id + 2) * out_dim
            else:
                start_cls_old = init_cls + (dim_id - 1) * inc
                start_dim_old, end_dim_old = task_id * out_dim, (task_id + 1) * out_dim
            A = fc[start_cls_old:total, start_dim_old:end_dim_old]
            B = fc[start_cls_old:total, start_dim:end_dim]
            A_hat = fc[start_cls:end_cls, start_dim_old:end_dim_old]
            similarity = torch.zeros(len(A_hat), len(A), dtype=fc.dtype)
            for i in range(len(A_hat)):
                for j in range(len(A)):
                    similarity[i][j] = torch.cosine_similarity(A_hat[i], A[j], dim=0)
            similarity = F.softmax(similarity, dim=1)
            B_hat = torch.zeros(A_hat.shape[0], B.shape[1], dtype=fc.dtype)
            for i in range(len(A_hat)):
                for j in range(len(A)):
                    B_hat[i] += similarity[i][j] * B[j]
            fc[start_cls:end_cls, start_dim:end_dim] = B_hat
    return fc


def their_forward_reweight(x, weight, cur_task, alpha, beta, init_cls, inc, out_dim, use_init_ptm):
    """backbone/linears.py CosineLinear.forward_reweight with σ = 1."""
    in_features = weight.shape[1]
    for i in range(cur_task + 1):
        start_cls = 0 if i == 0 else init_cls + (i - 1) * inc
        end_cls = start_cls + (init_cls if i == 0 else inc)
        out = 0.0
        for j in range(in_features // out_dim):
            if use_init_ptm and j == 0:
                out += beta * F.linear(F.normalize(x[:, :out_dim], p=2, dim=1),
                                       F.normalize(weight[start_cls:end_cls, :out_dim], p=2, dim=1))
                continue
            out1 = F.linear(F.normalize(x[:, j * out_dim:(j + 1) * out_dim], p=2, dim=1),
                            F.normalize(weight[start_cls:end_cls, j * out_dim:(j + 1) * out_dim], p=2, dim=1))
            if j != (i + 1 if use_init_ptm else i):
                out1 = alpha * out1 / cur_task
            out += out1
        out_all = out if i == 0 else torch.cat((out_all, out), dim=1)
    return out_all


@pytest.mark.parametrize("use_init_ptm", [False, True])
def test_prototypes_complement_and_prediction_are_theirs(use_init_ptm):
    """replace_fc: class means in every subspace of the task's data, the rest of the zero-initialised fc as it
    was; solve_sim_reset over all (task, newer subspace) pairs; forward_reweight on the completed fc."""
    torch.manual_seed(1)
    p, tasks, n, dim = int(use_init_ptm), 3, 2, 4
    raw, fc = [], torch.zeros(tasks * n, (tasks + p) * dim, dtype=torch.float64)
    for t in range(tasks):
        feats = torch.randn(10, (t + 1 + p) * dim, dtype=torch.float64)
        targets = torch.arange(t * n, t * n + n).repeat(5)
        raw.append(class_means(feats, targets, range(t * n, t * n + n)))
        for c in range(t * n, t * n + n):
            fc[c, :(t + 1 + p) * dim] = feats[targets == c].mean(0)
    expected = their_complement(fc, n, n, tasks - 1, dim, use_init_ptm)
    ours = complete(raw, dim, use_init_ptm)
    assert torch.allclose(ours, expected, rtol=0, atol=1e-14)
    assert ours[:n, (1 + p) * dim:].abs().sum() > 0  # task 0's classes gained their newer subspaces
    x = torch.randn(5, (tasks + p) * dim, dtype=torch.float64)
    for alpha, beta in ((0.1, 1.0 * p), (1.0, 0.5 * p)):
        theirs = their_forward_reweight(x, expected, tasks - 1, alpha, beta, n, n, dim, use_init_ptm)
        assert torch.allclose(reweighted_logits(x, ours, [n] * tasks, alpha, beta, use_init_ptm), theirs,
                              rtol=0, atol=1e-14)
    first = x[:, :(1 + p) * dim]  # after the first task: one adapter subspace, no division by the task index
    theirs = their_forward_reweight(first, expected[:n, :(1 + p) * dim], 0, 0.1, 0.7 * p, n, n, dim, use_init_ptm)
    assert torch.allclose(reweighted_logits(first, complete(raw[:1], dim, use_init_ptm), [n], 0.1, 0.7 * p,
                                            use_init_ptm), theirs, rtol=0, atol=1e-14)
