"""The LCA loss against a hand computation and a literal loop, and the head-alignment loop."""
import math

import pytest
import torch
import torch.nn.functional as F

from imlca.core.gaussian_bank import GaussianBank
from imlca.core.lca import align_heads, lca_loss, lca_loss_terms

LN2 = math.log(2.0)
MEANS = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])  # μ0, μ1, μ2
# (target, feature, ℓ in units of ln 2, nearest mean)
BATCH = [
    (0, (0.0, 0.0), 1, 0),  # inside class 0's region
    (0, (1.0, 0.0), 3, 0),  # inside
    (0, (9.0, 0.0), 2, 1),  # outside: nearer μ1
    (1, (0.0, 9.0), 1, 2),  # class 1 has no sample inside its region
    (1, (1.0, 8.0), 2, 2),
    (2, (0.0, 11.0), 2, 2),  # class 2: |S| = 1
    (0, (0.0, 1.0), 4, 0),  # inside
]


def _batch():
    targets = torch.tensor([t for t, _, _, _ in BATCH])
    features = torch.tensor([f for _, f, _, _ in BATCH])
    # logits = log p with p_target = 2^−k and the rest split evenly, so ℓ = −log p_target = k·ln 2
    rows = []
    for target, _, k, _ in BATCH:
        p = torch.full((3,), (1 - 2.0**-k) / 2)
        p[target] = 2.0**-k
        rows.append(p.log())
    return torch.stack(rows).requires_grad_(True), targets, features


def test_batch_regions_are_as_annotated():
    _, _, features = _batch()
    assert torch.cdist(features, MEANS).argmin(1).tolist() == [n for _, _, _, n in BATCH]


def test_lca_loss_by_hand():
    logits, targets, features = _batch()
    # class 0: S = {ℓ 1, 3, 4} (ℓ = 2 is outside): term1 = 8/3; ordered pairs |1−3|, |1−4|, |3−4| twice → 12/6 = 2
    # class 1: S empty → term1 = mean(1, 2) = 1.5, term2 = 0
    # class 2: |S| = 1 → term1 = 2, term2 = 0
    # λ = 0.5: (8/3 + 0.5·2 + 1.5 + 2) / 3 = (43/6) / 3 = 43/18, in units of ln 2
    loss = lca_loss(logits, targets, features, MEANS, lam=0.5)
    assert loss.item() == pytest.approx(43 / 18 * LN2, abs=1e-6)
    # λ = 1: (8/3 + 2 + 1.5 + 2) / 3 = 49/18
    assert lca_loss(logits, targets, features, MEANS, lam=1.0).item() == pytest.approx(49 / 18 * LN2, abs=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_lca_terms_by_hand(lam):
    """The two logged terms, averaged over the 3 classes: term 1 = (8/3 + 1.5 + 2) / 3 = 37/18, term 2 = 2/3
    (in units of ln 2), whatever λ weighs them with; with λ > 0 the loss is term 1 + λ·term 2."""
    logits, targets, features = _batch()
    loss, ce, spread = lca_loss_terms(logits, targets, features, MEANS, lam)
    assert ce.item() == pytest.approx(37 / 18 * LN2, abs=1e-6)
    assert spread.item() == pytest.approx(2 / 3 * LN2, abs=1e-6)
    assert not ce.requires_grad and not spread.requires_grad
    if lam > 0:
        assert loss.item() == pytest.approx((37 / 18 + lam * 2 / 3) * LN2, abs=1e-6)


def test_lam_zero_is_plain_cross_entropy():
    logits, targets, features = _batch()
    loss = lca_loss(logits, targets, features, MEANS, lam=0.0)
    assert torch.equal(loss, F.cross_entropy(logits, targets))
    assert torch.equal(lca_loss_terms(logits, targets, features, MEANS, lam=0.0)[0], loss)
    # mean of ℓ = (1 + 3 + 2 + 1 + 2 + 2 + 4) / 7 = 15/7 ln 2, unlike the region-wise average
    assert loss.item() == pytest.approx(15 / 7 * LN2, abs=1e-6)


def test_gradient_reaches_the_logits():
    logits, targets, features = _batch()
    lca_loss(logits, targets, features, MEANS, lam=0.1).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def _lca_by_loop(logits, targets, features, means, lam):
    # A literal transcription of DESIGN §1 step 4
    ce = F.cross_entropy(logits, targets, reduction="none")
    nearest = torch.stack([torch.linalg.norm(z - means, dim=1).argmin() for z in features])
    total, classes = 0.0, targets.unique().tolist()
    for i in classes:
        in_region = [j for j in range(len(targets)) if targets[j] == i and nearest[j] == i]
        if not in_region:
            term1, term2 = ce[targets == i].mean(), 0.0
        else:
            term1 = ce[in_region].mean()
            pairs = [abs(ce[j] - ce[k]) for j in in_region for k in in_region if j != k]
            term2 = sum(pairs) / len(pairs) if pairs else 0.0
        total = total + term1 + lam * term2
    return total / len(classes)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lca_loss_matches_a_literal_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(6, 5, generator=gen, dtype=torch.float64) * 2
    targets = torch.randint(0, 6, (40,), generator=gen)
    features = means[targets] + torch.randn(40, 5, generator=gen, dtype=torch.float64) * 1.5
    logits = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    expected = _lca_by_loop(logits, targets, features, means, 0.3)
    assert torch.allclose(lca_loss(logits, targets, features, means, 0.3), expected, rtol=0, atol=1e-12)


def _separable_bank(n_classes=4, dim=8):
    gen = torch.Generator().manual_seed(0)
    means = 5.0 * torch.eye(n_classes, dim)  # class c centred at 5·e_c: the Bayes error is ~0.1%
    labels = torch.arange(n_classes).repeat_interleave(200)
    bank = GaussianBank(dim)
    bank.update(means[labels] + torch.randn(len(labels), dim, generator=gen), labels)
    return bank


def _accuracy(weight, bank, classes):
    features, labels = bank.sample(classes, 256, torch.Generator().manual_seed(99))
    return ((features @ weight.float().T).argmax(1) == labels).float().mean().item()


def _align(weight, bank, lam, seed=0, epochs=6):
    classes = [0, 1, 2, 3]
    return align_heads(
        weight, bank, classes, lam=lam, samples_per_class=64, epochs=epochs, batch_size=32,
        lr=0.1, momentum=0.9, weight_decay=5e-4, generator=torch.Generator().manual_seed(seed),
    )


@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_align_heads_fixes_misaligned_heads(lam):
    bank = _separable_bank()
    weight = bank.means([1, 2, 3, 0]).double()  # row c points at class c+1: accuracy near 0
    assert _accuracy(weight, bank, [0, 1, 2, 3]) < 0.1
    original = weight.clone()
    aligned, history = _align(weight, bank, lam)
    assert _accuracy(aligned, bank, [0, 1, 2, 3]) > 0.95
    losses = history["loss"]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert len(history["ce"]) == len(history["spread"]) == 6 and min(history["spread"]) >= 0
    assert aligned.dtype == torch.float64 and aligned.shape == weight.shape
    assert torch.equal(weight, original)  # the input is not modified


def test_align_heads_is_deterministic_for_a_generator():
    bank = _separable_bank()
    weight = torch.zeros(4, 8)
    first, second = _align(weight, bank, 0.1, seed=3, epochs=2), _align(weight, bank, 0.1, seed=3, epochs=2)
    assert torch.equal(first[0], second[0]) and first[1] == second[1]
    assert not torch.equal(first[0], _align(weight, bank, 0.1, seed=4, epochs=2)[0])
    assert not torch.equal(first[0], _align(weight, bank, 0.0, seed=3, epochs=2)[0])  # λ is used


def test_align_heads_rejects_a_weight_of_the_wrong_height():
    with pytest.raises(ValueError, match="len\\(classes\\) = 4"):
        _align(torch.zeros(3, 8), _separable_bank(), 0.1)
