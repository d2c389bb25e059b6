"""MOS against a transcription of its authors' code (github.com/sun-hailong/AAAI25-MOS: backbone/vit_mos.py
Adapter, Block, `reweight_adapter`, `adapter_merge`, `adapter_update`, `forward_features`; models/mos.py
`_init_train`, `orth_loss`, `_compute_mean`, `classifer_align`, `_eval_cnn`) on a tiny ViT in float64: the
training loss and its gradient steps with the in-place reweighting, the statistics pass, the stored adapters'
drift at test time, the classifier alignment and the prediction (retrieval + ensemble)."""
import copy
from types import SimpleNamespace

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from imlca.config import MOSConfig, TrainConfig
from imlca.core.gaussian_bank import GaussianBank
from imlca.core.mos import align_head, ensemble, pulled, retrieve, sample_bank, snapshot_means
from imlca.engine.mos_prediction import MOSPredictor
from imlca.engine.mos_runner import fit_mos
from imlca.models.adapters import attach_adapters, load_set, pulled_on_every_block, read_set, sites

from timm_features import Ours

D, R, M = 32, 8, 0.1  # width, bottleneck, adapter momentum


class TheirAdapter(nn.Module):
    """vit_mos.Adapter, init "lora", no adapter LayerNorm, scalar 0.1; dropout 0 here (random otherwise)."""

    def __init__(self):
        super().__init__()
        self.down_proj, self.up_proj, self.scale = nn.Linear(D, R), nn.Linear(R, D), 0.1

    def forward(self, x):
        return self.up_proj(F.relu(self.down_proj(x))) * self.scale  # add_residual=False


class TheirViT(nn.Module):
    """vit_mos.VisionTransformer's adapter bookkeeping and forward around the timm blocks' own modules."""

    def __init__(self, vit, classes):
        super().__init__()
        self.vit, self.head = vit, nn.Linear(D, classes).double()
        self.cur_adapter, self.adapter_list = nn.ModuleList(), nn.ModuleList()
        self.sums = {k: [[] for _ in vit.blocks] for k in ("dw", "db", "uw", "ub")}

    def _params(self, a):
        return {"dw": a.down_proj.weight, "db": a.down_proj.bias, "uw": a.up_proj.weight, "ub": a.up_proj.bias}

    def adapter_update(self):  # l.310–326
        self.adapter_list.append(copy.deepcopy(self.cur_adapter))
        for layer in range(len(self.vit.blocks)):
            for k, p in self._params(self.cur_adapter[layer]).items():
                s = self.sums[k][layer]
                s.append(p.data + s[-1] if s else p.data)

    def reweight_adapter(self, adapter, idx):  # l.328–346
        if idx == 0:
            return adapter
        for layer in range(len(self.vit.blocks)):
            for k, p in self._params(adapter[layer]).items():
                p.data = (1 - M) * p.data + M * self.sums[k][layer][idx - 1] / idx
        return adapter

    def adapter_merge(self):  # l.303–308
        if len(self.adapter_list):
            self.cur_adapter = self.reweight_adapter(self.cur_adapter, len(self.adapter_list))

    def features(self, x, adapter_id, train):  # forward_features l.348–393
        vit = self.vit
        x = vit._pos_embed(vit.patch_embed(x))
        for layer, blk in enumerate(vit.blocks):
            if train or adapter_id == len(self.adapter_list):
                adapter = self.reweight_adapter(self.cur_adapter, adapter_id)
            else:
                adapter = self.reweight_adapter(self.adapter_list[adapter_id], adapter_id)
            x = x + blk.attn(blk.norm1(x))
            adapt_x = adapter[layer](x)
            x = x + (blk.mlp.fc2(blk.mlp.act(blk.mlp.fc1(blk.norm2(x)))) + adapt_x)
        return vit.norm(x)[:, 0]


def _vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=16, patch_size=8,
                             depth=2, embed_dim=D, num_heads=2).double().eval()


def _adapter_set(seed):
    torch.manual_seed(seed)
    return nn.ModuleList(TheirAdapter().double() for _ in range(2))  # trained-looking: nothing at zero


def _as_ours(ours, adapters):
    names = list(sites(ours.backbone))
    return {f"{n}.{k}": v.detach().clone() for n, a in zip(names, adapters)
            for k, v in {"down.weight": a.down_proj.weight, "down.bias": a.down_proj.bias,
                         "up.weight": a.up_proj.weight, "up.bias": a.up_proj.bias}.items()}


def _pair(classes=5):
    """Theirs after task 0 (snapshot 0 stored, the carried adapter moved on) and ours at the same state."""
    theirs = TheirViT(_vit(), classes)
    theirs.cur_adapter = _adapter_set(1)
    theirs.adapter_update()
    theirs.cur_adapter = _adapter_set(2)
    ours = Ours(attach_adapters(copy.deepcopy(theirs.vit), "vit_test_tiny", R, 0.1, 0.0).double())
    load_set(ours.backbone, _as_ours(ours, theirs.cur_adapter))
    return theirs, ours


def _same_adapter(ours, adapters, atol):
    mine = read_set(ours.backbone)
    return all(torch.allclose(mine[k], v, rtol=0, atol=atol) for k, v in _as_ours(ours, adapters).items())


def their_orth_loss(features, means, reg=0.1):  # models/mos.py l.335–355
    M_ = torch.cat([means, features], dim=0)
    sim = torch.matmul(M_, M_.t()) / 0.8
    return reg * F.cross_entropy(sim, torch.arange(0, sim.shape[0]))


@pytest.mark.parametrize("reweight", ["every_forward", "once_per_step"])
def test_the_training_steps_are_theirs(reweight):
    """Task 1: CE over the first `seen` logits with the old ones at −inf, + the orthogonality loss with the old
    class means; SGD momentum 0.9, the head at 0.1·lr, weight decay on both, cosine to 0; the adapter pulled to
    snapshot 0 after each step and (their code) before every block of every forward."""
    theirs, ours = _pair()
    head = torch.cat([theirs.head.weight.detach(), theirs.head.bias.detach()[:, None]], dim=1)
    images, targets = torch.rand(6, 3, 16, 16, dtype=torch.float64), torch.tensor([2, 3, 2, 3, 3, 2])
    means = torch.randn(2, D, dtype=torch.float64)
    known, seen, lr, wd, epochs = 2, 4, 0.05, 5e-3, 3
    groups = [{"params": list(theirs.cur_adapter.parameters()), "lr": lr, "weight_decay": wd},
              {"params": list(theirs.head.parameters()), "lr": lr * 0.1, "weight_decay": wd}]
    optimizer = torch.optim.SGD(groups, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0)
    their_losses = []
    for _ in range(epochs):
        if reweight == "every_forward":
            features = theirs.features(images, adapter_id=1, train=True)
        else:  # the paper's form: the forward uses the adapter as it is
            features = _plain(theirs, images)
        logits = theirs.head(features)[:, :seen]
        logits[:, :known] = float("-inf")
        loss = F.cross_entropy(logits, targets) + their_orth_loss(features, means)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        theirs.adapter_merge()
        their_losses.append(loss.item())
        schedule.step()
    mos = MOSConfig(reweight=reweight)
    train = TrainConfig(epochs=epochs, lr=lr, weight_decay=wd, min_lr=0.0, momentum=0.9)
    our_head = nn.Parameter(head.clone())
    mean = snapshot_means([_as_ours(ours, theirs.adapter_list[0]), {}])[-1]
    losses = fit_mos(ours, our_head, [(images, targets)], known, seen, means, mean, train, mos, torch.device("cpu"))
    assert losses == pytest.approx(their_losses, rel=1e-12)
    assert _same_adapter(ours, theirs.cur_adapter, 1e-12)
    assert torch.allclose(our_head[:, :-1], theirs.head.weight, rtol=0, atol=1e-12)
    assert torch.allclose(our_head[:, -1], theirs.head.bias, rtol=0, atol=1e-12)
    assert not torch.equal(our_head[seen:], head[seen:])  # the unseen class only decays, as theirs


def _plain(theirs, images):
    """Their forward with the carried adapter, not reweighted (what once_per_step computes)."""
    vit = theirs.vit
    x = vit._pos_embed(vit.patch_embed(images))
    for layer, blk in enumerate(vit.blocks):
        x = x + blk.attn(blk.norm1(x))
        x = x + (blk.mlp.fc2(blk.mlp.act(blk.mlp.fc1(blk.norm2(x)))) + theirs.cur_adapter[layer](x))
    return vit.norm(x)[:, 0]


def test_the_statistics_pass_keeps_pulling_the_carried_adapter():
    """_compute_mean: eval mode, train=True, batches of one class: each forward pulls every block's adapter; the
    class statistics are torch.cov + 1e-4·I (and its diagonal for `variance`)."""
    theirs, ours = _pair()
    batches = [torch.rand(3, 3, 16, 16, dtype=torch.float64) for _ in range(3)]
    with torch.no_grad():
        expected = torch.cat([theirs.features(x, adapter_id=1, train=True) for x in batches])
    mean = snapshot_means([_as_ours(ours, theirs.adapter_list[0]), {}])[-1]
    with torch.no_grad(), pulled_on_every_block(ours.backbone, mean, M):
        got = torch.cat([ours.features(x) for x in batches])
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)
    assert _same_adapter(ours, theirs.cur_adapter, 1e-13)
    bank = GaussianBank(D, 1e-4)
    bank.update(got, torch.zeros(len(got), dtype=torch.long))
    cov = torch.cov(expected.T) + torch.eye(D, dtype=torch.float64) * 1e-4
    assert torch.allclose(bank.covariance(0), cov, rtol=0, atol=1e-12)
    gen = torch.Generator().manual_seed(3)
    diag, _ = sample_bank(bank, [0], 4, gen, diagonal=True)
    eps = torch.randn(4, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(diag, (bank.mean(0) + eps * torch.diag(cov).sqrt()).float(), rtol=0, atol=1e-6)


def test_the_pull_in_closed_form_is_their_repeated_pull():
    value, mean = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    repeated = value.clone()
    for _ in range(37):
        repeated = (1 - M) * repeated + M * mean
    assert torch.allclose(pulled(value, mean, M, 37), repeated, rtol=0, atol=1e-14)
    assert torch.equal(pulled(value, mean, M, 0), value)


def their_retrieval(head_logits, start, class_task, rounds):  # models/mos.py l.376–396, one sample at a time
    out = []
    for x in range(len(head_logits)):
        loop, prev = 0, int(start[x])
        while True:
            loop += 1
            cur = head_logits[x, prev][None]
            idx = int(class_task[cur.argmax(dim=1)][0])
            if loop >= rounds or idx == prev:
                break
            prev = idx
        out.append(cur)
    return torch.cat(out)


@pytest.mark.parametrize("rounds", [1, 2, 4])
def test_retrieval_is_theirs(rounds):
    torch.manual_seed(4)
    class_task = torch.tensor([0, 0, 1, 1, 2, 2])
    head_logits, start = torch.randn(40, 3, 6, dtype=torch.float64), torch.randint(0, 3, (40,))
    got = retrieve(head_logits, start, class_task, rounds)
    assert torch.equal(got, their_retrieval(head_logits, start, class_task, rounds))
    if rounds > 1:  # some images switched adapter
        assert not torch.equal(got, head_logits[torch.arange(40), start])


def test_the_prediction_and_the_stored_adapters_drift_are_theirs():
    """_eval_cnn over two test batches at task 2: adapter 0's prototype logits, t + 1 passes with the stored
    adapters pulled in place (train=False), retrieval (4 rounds) and the ensemble."""
    theirs, ours = _pair(classes=6)
    theirs.adapter_update()  # snapshot 1; then 2
    theirs.cur_adapter = _adapter_set(3)
    theirs.adapter_update()
    sets = [_as_ours(ours, a) for a in theirs.adapter_list]
    torch.manual_seed(6)
    prototypes, class_task = torch.randn(6, D, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 2, 2])
    head = torch.cat([theirs.head.weight.detach(), theirs.head.bias.detach()[:, None]], dim=1)
    cfg = SimpleNamespace(mos=MOSConfig())
    predictor = MOSPredictor(SimpleNamespace(model=ours, device=torch.device("cpu"), cfg=cfg))
    tables = {"mos": (prototypes, head, class_task)}
    for b in range(2):
        images = torch.rand(5, 3, 16, 16, dtype=torch.float64)
        with torch.no_grad():
            orig = F.linear(F.normalize(theirs.features(images, 0, False), dim=1), F.normalize(prototypes, dim=1))
            feats = torch.stack([theirs.features(images, t, False) for t in range(3)], dim=1)
            final = their_retrieval(theirs.head(feats), class_task[orig.argmax(1)], class_task, 4)
            expected = F.softmax(final, dim=1) + F.softmax(orig / (1 / 3), dim=1)
        got = predictor._batch(2, sets, snapshot_means(sets), tables, images, [0, 2 * b, 2 * b])["mos"]
        assert torch.allclose(got, expected, rtol=0, atol=1e-12)
        assert torch.allclose(ensemble(final, orig, 2), expected, rtol=0, atol=0)
    drifted = read_set(ours.backbone)  # adapter 2 as the last batch left it: pulled 4 times at the last block
    assert any(not torch.equal(drifted[k], sets[2][k]) for k in sets[2])


def test_the_classifier_alignment_is_theirs():
    """classifer_align on the same sampled features: SGD lr ca_lr, momentum 0.9, the config's weight decay (its
    parameter group overrides the 5e-4 default), cosine over the epochs, `seen` minibatches of 5·batch."""
    torch.manual_seed(8)
    seen, batch, epochs, lr, wd = 3, 4, 3, 0.005, 5e-3
    draws = [(torch.randn(seen * batch, D, dtype=torch.float64), torch.randint(0, seen, (seen * batch,)))
             for _ in range(epochs)]
    head = nn.Linear(D, 5).double()
    start = torch.cat([head.weight.detach(), head.bias.detach()[:, None]], dim=1)
    optimizer = torch.optim.SGD([{"params": head.parameters(), "lr": lr, "weight_decay": wd}], lr=lr, momentum=0.9,
                                weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    for inputs, targets in draws:
        for it in range(seen):
            loss = F.cross_entropy(head(inputs[it * batch:(it + 1) * batch])[:, :seen],
                                   targets[it * batch:(it + 1) * batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    queue = list(draws)
    got, history = align_head(start, lambda: queue.pop(0), seen, batch, epochs, lr, 0.9, wd)
    assert torch.allclose(got[:, :-1], head.weight, rtol=0, atol=1e-14)
    assert torch.allclose(got[:, -1], head.bias, rtol=0, atol=1e-14)
    assert len(history) == epochs and not torch.equal(got, start)
