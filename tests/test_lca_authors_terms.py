"""The authors' optional alignment terms (DESIGN §1b): the entropy term (`train_ca_entropy_weight`) and the per-task
logit normalisation (`train_ca_logit_norm`), against hand computations and a transcription of their loop
(github.com/tungts1101/LCA, c12c344 lca.py:486-621), and how a run's config reaches them."""
import math

import pytest
import torch
import torch.nn.functional as F

from imlca.config import load_config
from imlca.core.gaussian_bank import GaussianBank
from imlca.core.lca import align_heads, entropy, lca_loss, lca_loss_terms, normalise_logits
from imlca.engine.state import MergeState, authors_terms
from imlca.engine.task_output import TaskOutput

from test_lca import BATCH, LN2, MEANS, _batch


def _authors_batch_loss(logits, y, x, class_means, cls_to_task, num_tasks, robust_weight, entropy_weight,
                        logit_norm):
    """c12c344 lca.py:486-621 for one batch, the logging left out (their names, their branches)."""
    if logit_norm is not None:
        batch_size = logits.size(0)
        task_norms = torch.zeros(batch_size, num_tasks, dtype=logits.dtype)
        for task in range(num_tasks):
            cls_indices = [clz for clz in cls_to_task if cls_to_task[clz] == task]
            if cls_indices:
                task_norms[:, task] = torch.norm(logits[:, cls_indices], p=2, dim=-1) + 1e-7
        avg_norms = (task_norms.sum(dim=-1) / num_tasks).unsqueeze(-1)
        loss_vec = F.cross_entropy(logits / (avg_norms + 1e-7) / logit_norm, y, reduction="none")
    else:
        loss_vec = F.cross_entropy(logits, y, reduction="none")
    if robust_weight == 0 and entropy_weight == 0:
        return loss_vec.mean()
    L_total = torch.tensor(0.0, dtype=logits.dtype)
    unique_classes = torch.unique(y)
    class_indices = torch.argmin(torch.cdist(x, class_means), dim=1)
    for class_i in unique_classes:
        label_mask = y == class_i
        class_mask = (class_indices == class_i) & label_mask
        if len(torch.where(class_mask)[0]) == 0:
            term1, term2, term3 = loss_vec[label_mask].mean(), torch.tensor(0.0), torch.tensor(0.0)
        else:
            class_losses = loss_vec[class_mask]
            term1 = class_losses.mean()
            if len(class_losses) >= 2:
                pairwise = torch.abs(class_losses.unsqueeze(1) - class_losses.unsqueeze(0))
                term2 = pairwise[~torch.eye(len(class_losses), dtype=torch.bool)].mean()
            else:
                term2 = torch.tensor(0.0)
            if entropy_weight != 0:
                probs = F.softmax(logits[class_mask], dim=1)
                term3 = (-torch.sum(probs * torch.log(probs + 1e-8), dim=1)).mean()
            else:
                term3 = torch.tensor(0.0)
        L_total = L_total + term1 + robust_weight * term2 + entropy_weight * term3
    return L_total / len(unique_classes)


def _entropy_by_hand(k: int) -> float:
    """Entropy of a BATCH row of test_lca: p_target = 2^−k, the two others (1 − 2^−k)/2 each (with their ε)."""
    p, q = 2.0**-k, (1 - 2.0**-k) / 2
    return -(p * math.log(p + 1e-8) + 2 * q * math.log(q + 1e-8))


def test_entropy_term_by_hand():
    logits, targets, features = _batch()
    # class 0's region holds the rows with k = 1, 3, 4; class 1's is empty (term 3 = 0); class 2's holds k = 2
    term3 = (_entropy_by_hand(1) + _entropy_by_hand(3) + _entropy_by_hand(4)) / 3 + 0 + _entropy_by_hand(2)
    # λ = 0.5, w = 0.2: (43/6 ln 2 + 0.2 · Σ term 3) / 3 (test_lca_loss_by_hand has the first part)
    loss = lca_loss(logits, targets, features, MEANS, 0.5, entropy_weight=0.2)
    assert loss.item() == pytest.approx((43 / 6 * LN2 + 0.2 * term3) / 3, abs=1e-6)
    # λ = 0 with w > 0 takes the class-wise form, as theirs does: term 1 = (8/3 + 1.5 + 2) ln 2 summed over classes
    loss, ce, spread = lca_loss_terms(logits, targets, features, MEANS, 0.0, entropy_weight=0.2)
    assert loss.item() == pytest.approx((37 / 6 * LN2 + 0.2 * term3) / 3, abs=1e-6)
    assert (ce.item(), spread.item()) == pytest.approx((37 / 18 * LN2, 2 / 3 * LN2), abs=1e-6)
    assert entropy(logits)[0].item() == pytest.approx(_entropy_by_hand(BATCH[0][2]), abs=1e-6)


def test_logit_norm_by_hand():
    logits = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    # row 0: task norms 5 + 1e-7 and 0 + 1e-7, mean 2.5 + 1e-7, divided by (2.5 + 2e-7) then τ = 0.5
    # row 1: task norms 1 + 1e-7 and 1e-7, mean 0.5 + 1e-7
    out = normalise_logits(logits, [2, 2], 0.5)
    expected = torch.tensor([[3 / (2.5 + 2e-7) / 0.5, 4 / (2.5 + 2e-7) / 0.5, 0, 0],
                             [0, 1 / (0.5 + 2e-7) / 0.5, 0, 0]], dtype=torch.float64)
    assert torch.allclose(out, expected, rtol=1e-15, atol=0)
    assert out[0, :2].tolist() == pytest.approx([2.4, 3.2], rel=1e-6)
    # the loss's cross-entropy takes these logits: target 1 of row 0 → log(e^2.4 + e^3.2 + 2) − 3.2
    targets, features = torch.tensor([1, 1]), torch.zeros(2, 2, dtype=torch.float64)
    means = torch.tensor([[1.0, 0.0], [0.0, 0.0], [5.0, 5.0], [6.0, 6.0]], dtype=torch.float64)  # both in class 1
    loss, ce, _ = lca_loss_terms(logits, targets, features, means, 0.0, temperature=0.5, task_sizes=[2, 2])
    row1 = math.log(3 + math.exp(4.0)) - 4.0  # row 1: logits (0, 4, 0, 0) up to the ε
    assert loss.item() == pytest.approx((math.log(math.exp(2.4) + math.exp(3.2) + 2) - 3.2 + row1) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="task_sizes"):
        lca_loss(logits, targets, features, means, 0.1, temperature=0.5)


@pytest.mark.parametrize("lam, weight, tau", [(0.3, 0.0, None), (0.3, 0.2, None), (0.0, 0.2, None),
                                              (0.0, 0.0, 0.25), (0.3, 0.0, 0.25), (2.0, 0.7, 0.15)])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_authors_loop(lam, weight, tau, seed):
    """Loss and gradient on 40 random samples of 7 classes in tasks of 3 and 4 (some regions empty), float64."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(7, 5, generator=gen, dtype=torch.float64) * 2
    targets = torch.randint(0, 7, (40,), generator=gen)
    features = means[targets] + torch.randn(40, 5, generator=gen, dtype=torch.float64) * 1.5
    ours_logits = torch.randn(40, 7, generator=gen, dtype=torch.float64).requires_grad_(True)
    theirs_logits = ours_logits.detach().clone().requires_grad_(True)
    cls_to_task = {c: 0 if c < 3 else 1 for c in range(7)}
    ours = lca_loss(ours_logits, targets, features, means, lam, entropy_weight=weight, temperature=tau,
                    task_sizes=[3, 4])
    theirs = _authors_batch_loss(theirs_logits, targets, features, means, cls_to_task, 2, lam, weight, tau)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-12)
    ours.backward()
    theirs.backward()
    assert torch.allclose(ours_logits.grad, theirs_logits.grad, rtol=0, atol=1e-12)
    assert ours_logits.grad.abs().sum() > 0


def _bank():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(50)
    bank = GaussianBank(6)
    bank.update(3.0 * torch.eye(4, 6)[labels] + torch.randn(200, 6, generator=gen), labels)
    return bank


@pytest.mark.parametrize("terms", [{"entropy_weight": 0.5}, {"temperature": 0.2, "task_sizes": [2, 2]}])
def test_align_heads_uses_the_terms(terms):
    def align(**extra):
        return align_heads(torch.zeros(4, 6), _bank(), [0, 1, 2, 3], 0.1, 32, 2, 16, 0.1, 0.9, 5e-4,
                           torch.Generator().manual_seed(1), **extra)

    plain, with_terms = align(), align(**terms)
    assert not torch.equal(plain[0], with_terms[0]) and plain[1]["loss"] != with_terms[1]["loss"]
    off = align(entropy_weight=0.0, temperature=None, task_sizes=[2, 2])
    assert torch.equal(plain[0], off[0]) and plain[1] == off[1]


def _heads_after_two_tasks(*overrides):
    """MergeState on two tasks of two classes each (6-d features): every method's heads after task 1."""
    cfg = load_config(None, ["align.compare=[im, im_ca]", "align.samples_per_class=32", "align.epochs=2",
                             "align.batch_size=16", *overrides])
    state = MergeState(cfg, {"w": torch.zeros(3)}, 6)
    bank = _bank().state_dict()  # classes, count, sum, sumsq: one row per class 0..3
    for task in (0, 1):
        stats = {k: v[[2 * task, 2 * task + 1]] for k, v in bank.items()}  # this task's two classes
        state.integrate(TaskOutput(task, {"w": torch.full((3,), float(task))}, torch.zeros(2, 6), stats, [0.0]))
    return {method: torch.cat(heads) for method, heads in state.heads.items()}


def test_the_terms_reach_lca_only():
    """`align.entropy_weight` and `align.logit_norm_temperature` change IM+LCA's heads and leave IM+CA's bit for
    bit (the authors' CA baseline has neither); their defaults change nothing."""
    plain = _heads_after_two_tasks()
    for terms in (["align.entropy_weight=0.5"], ["align.logit_norm_temperature=0.2"]):
        changed = _heads_after_two_tasks(*terms)
        assert not torch.equal(changed["im_lca"], plain["im_lca"])
        assert torch.equal(changed["im_ca"], plain["im_ca"]) and torch.equal(changed["im"], plain["im"])
    off = _heads_after_two_tasks("align.entropy_weight=0", "align.logit_norm_temperature=null")
    assert all(torch.equal(off[m], plain[m]) for m in plain)
    cfg = load_config(None, ["align.entropy_weight=0.5", "align.logit_norm_temperature=0.2"])
    assert authors_terms(cfg, "im_lca") == {"entropy_weight": 0.5, "temperature": 0.2}
    assert authors_terms(cfg, "im_ca") == {} and authors_terms(cfg, "im") == {}
