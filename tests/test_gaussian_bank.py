"""GaussianBank: exact sufficient statistics, round trips, sampling moments and the Cholesky cache."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from imlca.core.gaussian_bank import GaussianBank
from imlca.errors import CheckpointError

# Class 7: the corners of a 2×2 square. μ = [1, 1]; deviations ±1 independent per axis, so the unbiased
# variance is 4·1 / 3 = 4/3 and the covariance of x and y is (1 − 1 − 1 + 1) / 3 = 0.
SQUARE = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])


def _integer_data(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Small integers: every float64 sum and product is exact, so statistics can be compared bit for bit
    gen = torch.Generator().manual_seed(seed)
    features = torch.randint(-8, 9, (n, dim), generator=gen).float()
    labels = torch.randint(0, 3, (n,), generator=gen) * 5  # class ids 0, 5, 10
    return features, labels


def test_mean_and_covariance_by_hand():
    bank = GaussianBank(2, ridge=0.5)
    bank.update(SQUARE, torch.full((4,), 7))
    assert bank.classes == [7]
    assert torch.equal(bank.mean(7), torch.tensor([1.0, 1.0], dtype=torch.float64))
    expected = torch.tensor([[4 / 3 + 0.5, 0.0], [0.0, 4 / 3 + 0.5]], dtype=torch.float64)
    assert torch.allclose(bank.covariance(7), expected, rtol=0, atol=1e-15)
    assert bank.covariance(7).dtype == torch.float64


def test_accumulates_over_updates_and_unsorted_class_ids():
    bank = GaussianBank(2, ridge=0.0)
    bank.update(SQUARE[:2], torch.tensor([7, 7]))
    bank.update(torch.tensor([[5.0, 5.0], [0.0, 2.0], [2.0, 2.0]]), torch.tensor([3, 7, 7]))
    assert bank.classes == [3, 7]
    assert torch.allclose(bank.covariance(7), torch.cov(SQUARE.double().T), rtol=0, atol=1e-15)
    assert torch.equal(bank.means([7, 3]), torch.tensor([[1.0, 1.0], [5.0, 5.0]]))
    assert bank.means([7, 3]).dtype == torch.float32


def test_merged_partial_statistics_equal_pooled_statistics_exactly():
    f1, l1 = _integer_data(50, 4, seed=0)
    f2, l2 = _integer_data(70, 4, seed=1)
    part1, part2, pooled = GaussianBank(4), GaussianBank(4), GaussianBank(4)
    part1.update(f1, l1)
    part2.update(f2, l2)
    pooled.update(torch.cat([f1, f2]), torch.cat([l1, l2]))
    part1.merge(part2)
    for key, value in pooled.state_dict().items():
        assert torch.equal(part1.state_dict()[key], value), key
    # merging copies: later updates of part2 do not leak into part1
    part2.update(f1, l1)
    assert torch.equal(part1.state_dict()["sum"], pooled.state_dict()["sum"])


def test_state_dict_layout_and_round_trip_through_a_file(tmp_path):
    features, labels = _integer_data(40, 3, seed=2)
    bank = GaussianBank(3)
    bank.update(features + 0.25, labels)
    state = bank.state_dict()
    assert {k: (v.dtype, tuple(v.shape)) for k, v in state.items()} == {
        "classes": (torch.int64, (3,)),
        "count": (torch.int64, (3,)),
        "sum": (torch.float64, (3, 3)),
        "sumsq": (torch.float64, (3, 3, 3)),
    }
    assert state["classes"].tolist() == [0, 5, 10]
    assert state["count"].sum().item() == 40
    save_file(state, tmp_path / "bank.safetensors")
    restored = GaussianBank.from_state_dict(load_file(tmp_path / "bank.safetensors"), ridge=1e-4)
    for key, value in state.items():
        assert torch.equal(restored.state_dict()[key], value), key
    assert torch.equal(restored.covariance(5), bank.covariance(5))


def test_class_tensors_are_the_banks_own_and_round_trip():
    """`class_tensors` (a checkpoint's layout) holds Σxxᵀ per class without a copy; a bank read from it, or merged
    from another, reads the tensors it is given and never changes them."""
    features, labels = _integer_data(40, 3, seed=4)
    bank = GaussianBank(3)
    bank.update(features, labels)
    tensors = bank.class_tensors()
    assert sorted(tensors) == ["classes", "count", "sum", "sumsq.0", "sumsq.10", "sumsq.5"]
    assert tensors["sumsq.5"] is bank._sumsq[5]
    restored = GaussianBank.from_state_dict(tensors)
    for key, value in bank.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    before = tensors["sumsq.5"].clone()
    restored.merge(bank)  # class 5 twice: added out of place
    assert torch.equal(tensors["sumsq.5"], before) and torch.equal(restored._sumsq[5], 2 * before)
    tensors.pop("sumsq.10")
    with pytest.raises(CheckpointError, match="'sumsq.10' has shape none"):
        GaussianBank.from_state_dict(tensors)


def test_empty_bank_round_trips():
    state = GaussianBank(6).state_dict()
    assert state["sum"].shape == (0, 6) and state["sumsq"].shape == (0, 6, 6)
    assert GaussianBank.from_state_dict(state).dim == 6


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda s: s.pop("sumsq"), "lacks 'sumsq'"),
        (lambda s: s.update(count=s["count"][:1]), "'count' has shape"),
        (lambda s: s.update(sumsq=s["sumsq"][:, :2]), "'sumsq' has shape"),
        (lambda s: s.update(classes=torch.tensor([0, 0, 5])), "repeats a class"),
    ],
)
def test_corrupt_state_raises_checkpoint_error(edit, match):
    features, labels = _integer_data(30, 3, seed=3)
    bank = GaussianBank(3)
    bank.update(features, labels)
    state = bank.state_dict()
    edit(state)
    with pytest.raises(CheckpointError, match=match):
        GaussianBank.from_state_dict(state)


def test_input_errors():
    bank = GaussianBank(2)
    with pytest.raises(ValueError, match=r"features must be \[N, 2\]"):
        bank.update(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be integer"):
        bank.update(torch.zeros(3, 2), torch.zeros(3))
    bank.update(torch.zeros(1, 2), torch.tensor([4]))
    with pytest.raises(ValueError, match="class 4 has 1 sample"):
        bank.covariance(4)
    with pytest.raises(ValueError, match=r"class 9 is not in the Gaussian bank \(it holds \[4\]\)"):
        bank.mean(9)
    with pytest.raises(ValueError, match="dim 3"):
        bank.merge(GaussianBank(3))


def _bank_with_known_moments() -> GaussianBank:
    gen = torch.Generator().manual_seed(4)
    mixing = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, -0.5, 0.5]])
    features = torch.cat([torch.randn(500, 3, generator=gen) @ mixing.T + 3.0, torch.randn(500, 3, generator=gen)])
    bank = GaussianBank(3)
    bank.update(features, torch.tensor([2] * 500 + [9] * 500))
    return bank


def test_sample_moments_converge():
    bank = _bank_with_known_moments()
    n = 100_000
    features, labels = bank.sample([9, 2], n, torch.Generator().manual_seed(0))
    assert features.dtype == torch.float32 and features.shape == (2 * n, 3)
    assert labels.dtype == torch.int64 and labels[:n].eq(9).all() and labels[n:].eq(2).all()
    for block, c in ((features[:n], 9), (features[n:], 2)):
        # tolerance: ≥ 6 standard errors (σ ≤ 2.3, so σ/√n ≤ 0.008 for the mean; ~0.02 for covariance entries)
        assert torch.allclose(block.double().mean(0), bank.mean(c), atol=0.05)
        assert torch.allclose(torch.cov(block.double().T), bank.covariance(c), atol=0.12)


def test_sample_is_deterministic_for_a_generator():
    bank = _bank_with_known_moments()
    first = bank.sample([2, 9], 8, torch.Generator().manual_seed(11))
    second = bank.sample([2, 9], 8, torch.Generator().manual_seed(11))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], bank.sample([2, 9], 8, torch.Generator().manual_seed(12))[0])


@pytest.mark.parametrize("via_merge", [False, True])
def test_cholesky_cache_is_invalidated_by_new_statistics(via_merge):
    f1, l1 = _integer_data(60, 3, seed=5)
    f2, l2 = _integer_data(60, 3, seed=6)
    f2 = f2 * 3  # a different covariance, so a stale factor would give different samples
    bank = GaussianBank(3)
    bank.update(f1, l1)
    bank.sample([0, 5, 10], 4, torch.Generator().manual_seed(0))  # fills the cache
    if via_merge:
        other = GaussianBank(3)
        other.update(f2, l2)
        bank.merge(other)
    else:
        bank.update(f2, l2)
    fresh = GaussianBank(3)
    fresh.update(torch.cat([f1, f2]), torch.cat([l1, l2]))
    got = bank.sample([0, 5, 10], 4, torch.Generator().manual_seed(1))[0]
    assert torch.allclose(got, fresh.sample([0, 5, 10], 4, torch.Generator().manual_seed(1))[0], atol=1e-5)
