"""Merge rules, task-vector arithmetic and LoRA deltas (imlca.core.merging), on hand-computed tensors."""
import pytest
import torch
from torch import nn

from imlca.core.merging import (
    apply_task_vector,
    incremental_merge,
    lora_delta,
    merge,
    task_vector,
)
from imlca.registries import MERGE_RULES

RULE = MERGE_RULES.load  # name → element-wise rule

# One column per case: same sign, prev larger, exact tie (opposite), both zero, prev zero, tie (opposite),
# opposite with prev larger, same sign negative, curr zero
PREV = [1.0, -3.0, 2.0, 0.0, 0.0, -2.0, 5.0, -1.0, 3.0]
CURR = [2.0, 1.0, -2.0, 0.0, -4.0, 2.0, -1.0, -2.0, 0.0]
EXPECTED = {
    # larger |τ| wins; the ties 2/−2 and −2/2 keep prev
    "max_abs": [2.0, -3.0, 2.0, 0.0, -4.0, -2.0, 5.0, -2.0, 3.0],
    # same sign → mean; opposite → 0; one zero → the other; both zero → 0
    "ties": [1.5, 0.0, 0.0, 0.0, -4.0, 0.0, 0.0, -1.5, 3.0],
    # (prev + curr) / 2
    "mean": [1.5, -1.0, 0.0, 0.0, -2.0, 0.0, 2.0, -1.5, 1.5],
}


@pytest.mark.parametrize("rule", sorted(EXPECTED))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_rule_on_hand_computed_cases(rule, dtype):
    prev = {"w": torch.tensor(PREV, dtype=dtype)}
    curr = {"w": torch.tensor(CURR, dtype=dtype)}
    out = merge(prev, curr, RULE(rule))
    assert out["w"].dtype == dtype
    assert torch.equal(out["w"], torch.tensor(EXPECTED[rule], dtype=dtype))
    # the inputs are left untouched
    assert torch.equal(prev["w"], torch.tensor(PREV, dtype=dtype))
    assert torch.equal(curr["w"], torch.tensor(CURR, dtype=dtype))


def test_registry_lists_exactly_the_three_rules():
    assert sorted(MERGE_RULES) == ["max_abs", "mean", "ties"]


@pytest.mark.parametrize("rule", sorted(EXPECTED))
def test_rules_keep_shapes_and_every_key(rule):
    prev = {"a": torch.tensor(PREV[:6]).view(2, 3), "b": torch.tensor(PREV[6:])}
    curr = {"a": torch.tensor(CURR[:6]).view(2, 3), "b": torch.tensor(CURR[6:])}
    out = merge(prev, curr, RULE(rule))
    assert out.keys() == {"a", "b"}
    assert torch.equal(out["a"], torch.tensor(EXPECTED[rule][:6]).view(2, 3))
    assert torch.equal(out["b"], torch.tensor(EXPECTED[rule][6:]))


def test_ties_uses_signs_not_products():
    # 1e-30·1e-30 underflows to 0 in float32; the elected sign must still see two positive entries → their mean
    prev, curr = {"w": torch.tensor([1e-30, -1e-30])}, {"w": torch.tensor([3e-30, 1e-30])}
    assert torch.equal(merge(prev, curr, RULE("ties"))["w"], torch.tensor([(1e-30 + 3e-30) / 2, 0.0]))


def _ties_by_definition(prev, curr):
    # Literal TIES without trimming: elected = sign(Σ signs); mean of the entries whose sign equals it
    stacked = torch.stack([prev, curr])  # [2, N]
    elected = torch.sign(torch.sign(stacked).sum(0))  # [N]
    agree = torch.sign(stacked) == elected  # [2, N]
    return (stacked * agree).sum(0) / agree.sum(0).clamp(min=1)


# 270,000 entries: more than one chunk of the merge (2^18 = 262,144), with a remainder
BIG = (600, 450)


def _random_with_zeros(gen):
    return torch.randn(BIG, generator=gen) * (torch.rand(BIG, generator=gen) > 0.3)


def test_ties_matches_its_definition_on_random_values_with_zeros():
    gen = torch.Generator().manual_seed(0)
    prev, curr = _random_with_zeros(gen), _random_with_zeros(gen)
    assert torch.equal(merge({"w": prev}, {"w": curr}, RULE("ties"))["w"], _ties_by_definition(prev, curr))


def test_max_abs_matches_where_on_random_values():
    gen = torch.Generator().manual_seed(1)
    prev, curr = _random_with_zeros(gen), _random_with_zeros(gen)
    expected = torch.where(curr.abs() > prev.abs(), curr, prev)
    assert torch.equal(merge({"w": prev}, {"w": curr}, RULE("max_abs"))["w"], expected)


@pytest.mark.parametrize("rule", sorted(EXPECTED))
def test_non_contiguous_inputs(rule):
    gen = torch.Generator().manual_seed(3)
    prev, curr = _random_with_zeros(gen), _random_with_zeros(gen)
    transposed = merge({"w": prev.T}, {"w": curr.T}, RULE(rule))["w"]
    assert torch.equal(transposed, merge({"w": prev}, {"w": curr}, RULE(rule))["w"].T)


def test_unknown_rule_lists_the_rules():
    with pytest.raises(KeyError, match=r"unknown merge rule 'magmax'.*max_abs.*mean.*ties"):
        RULE("magmax")


@pytest.mark.parametrize(
    "prev, curr, key",
    [
        ({"a": torch.zeros(2), "b": torch.zeros(2)}, {"a": torch.zeros(2)}, "b"),  # missing in current
        ({"a": torch.zeros(2)}, {"a": torch.zeros(2), "c": torch.zeros(2)}, "c"),  # extra in current
        ({"a": torch.zeros(2)}, {"a": torch.zeros(3)}, "a"),  # shape mismatch
        ({"a": torch.zeros(2)}, {"a": torch.zeros(2, dtype=torch.float64)}, "a"),  # dtype mismatch
    ],
)
def test_mismatched_dicts_name_the_key(prev, curr, key):
    with pytest.raises(ValueError, match=f"key '{key}'"):
        merge(prev, curr, RULE("ties"))


def test_task_vector_and_apply():
    theta0 = {"w": torch.tensor([1.0, 1.0, 1.0])}
    theta = {"w": torch.tensor([2.0, 0.0, 1.5])}
    tau = task_vector(theta, theta0)
    assert torch.equal(tau["w"], torch.tensor([1.0, -1.0, 0.5]))  # θ − θ0
    # θ0 + 0.5·τ = [1 + 0.5, 1 − 0.5, 1 + 0.25]
    assert torch.equal(apply_task_vector(theta0, tau, 0.5)["w"], torch.tensor([1.5, 0.5, 1.25]))
    assert torch.equal(apply_task_vector(theta0, tau, 1.0)["w"], theta["w"])
    with pytest.raises(ValueError, match="key 'v'"):
        apply_task_vector(theta0, {"v": torch.zeros(3)}, 1.0)


def test_incremental_merge_two_steps():
    theta0 = {"w": torch.tensor([1.0, 1.0, 1.0])}
    merged0 = {"w": torch.tensor([2.0, 0.0, 1.0])}  # task 0 adapter, taken as is: τ0 = [1, −1, 0]
    theta1 = {"w": torch.tensor([4.0, -1.0, 0.0])}  # τ1 = θ1 − θ0 = [3, −2, −1]
    # ties: same sign → means [2, −1.5], one zero → −1; θ0 + τ = [3, −0.5, 0]
    merged1 = incremental_merge(theta0, merged0, theta1, RULE("ties"), 1.0)
    assert torch.equal(merged1["w"], torch.tensor([3.0, -0.5, 0.0]))
    # α = 0.5: θ0 + 0.5·[2, −1.5, −1] = [2, 0.25, 0.5]
    half = incremental_merge(theta0, merged0, theta1, RULE("ties"), 0.5)
    assert torch.equal(half["w"], torch.tensor([2.0, 0.25, 0.5]))
    # max_abs: τ = [3, −2, −1] → θ1 itself
    assert torch.equal(incremental_merge(theta0, merged0, theta1, RULE("max_abs"), 1.0)["w"], theta1["w"])
    # step 2: τ_prev = merged1 − θ0 = [2, −1.5, −1]; θ2 = [0, 2, 1] → τ2 = [−1, 1, 0]
    # ties: opposite → 0, opposite → 0, one zero → −1; θ0 + τ = [1, 1, 0]
    theta2 = {"w": torch.tensor([0.0, 2.0, 1.0])}
    merged2 = incremental_merge(theta0, merged1, theta2, RULE("ties"), 1.0)
    assert torch.equal(merged2["w"], torch.tensor([1.0, 1.0, 0.0]))


def test_lora_delta_by_hand():
    a = torch.tensor([[1.0, 2.0]])  # [r=1, in=2]
    b = torch.tensor([[1.0], [3.0]])  # [out=2, r=1]
    # 0.5·B·A = 0.5·[[1, 2], [3, 6]]
    assert torch.equal(lora_delta(a, b, 0.5), torch.tensor([[0.5, 1.0], [1.5, 3.0]]))
    conv = lora_delta(a[:, :, None, None], b[:, :, None, None], 0.5)
    assert torch.equal(conv, torch.tensor([[0.5, 1.0], [1.5, 3.0]])[:, :, None, None])


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 5)
        self.conv = nn.Conv2d(4, 3, kernel_size=1)


def test_lora_delta_equals_peft_get_delta_weight():
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    model = inject_adapter_in_model(LoraConfig(r=2, lora_alpha=6, target_modules=["lin", "conv"]), _Tiny())
    for layer in (model.lin, model.conv):
        nn.init.normal_(layer.lora_B["default"].weight)  # peft initialises B to 0
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        scaling = layer.scaling["default"]
        assert scaling == 3.0  # lora_alpha / r
        expected = layer.get_delta_weight("default")
        got = lora_delta(a.detach(), b.detach(), scaling)
        assert got.shape == layer.base_layer.weight.shape
        assert torch.equal(got, expected.detach())
        assert got.abs().sum() > 0


@pytest.mark.parametrize(
    "a, b, match",
    [
        (torch.zeros(2, 4, 3, 3), torch.zeros(5, 2, 1, 1), "1×1"),  # a 3×3 convolution
        (torch.zeros(2, 4), torch.zeros(5, 3), "rank mismatch"),
        (torch.zeros(2, 4), torch.zeros(5, 2, 1, 1), "must both be 2-d"),
    ],
)
def test_lora_delta_rejects_unsupported_shapes(a, b, match):
    with pytest.raises(ValueError, match=match):
        lora_delta(a, b, 1.0)


@pytest.mark.parametrize("rule", sorted(EXPECTED))
def test_incremental_merge_equals_the_composed_functions(rule):
    gen = torch.Generator().manual_seed(2)
    theta0, merged_prev, theta_t = (
        {"a": torch.randn(4, 5, generator=gen), "big": _random_with_zeros(gen)} for _ in range(3)
    )
    tau = merge(task_vector(merged_prev, theta0), task_vector(theta_t, theta0), RULE(rule))
    expected = apply_task_vector(theta0, tau, 0.7)
    got = incremental_merge(theta0, merged_prev, theta_t, RULE(rule), 0.7)
    assert torch.equal(got["a"], expected["a"]) and torch.equal(got["big"], expected["big"])
    with pytest.raises(ValueError, match="key 'b' is in theta_t but not in theta0"):
        incremental_merge(theta0, merged_prev, {"a": theta_t["a"], "b": torch.zeros(1)}, RULE(rule), 1.0)
