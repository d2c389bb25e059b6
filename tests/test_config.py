import pytest

from imlca.config import ExperimentConfig, flatten, load_config
from imlca.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_paper_setup():
    cfg = ExperimentConfig()
    assert (cfg.model.backbone, cfg.lora.rank, cfg.lora.alpha) == ("vit_base_patch16_224", 64, 128.0)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr) == (10, 64, 1e-2)
    assert (cfg.align.samples_per_class, cfg.align.epochs, cfg.align.batch_size, cfg.align.lr) == (512, 10, 128, 5e-3)
    assert (cfg.align.lam, cfg.merge.alpha) == (0.1, 1.0)


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, "lora:\n  rank: 8\nalign:\n  compare: [im]\n")
    cfg = load_config(path, ["align.lam=0.25", "merge.rule=max_abs", "data.task_sizes=[10, 90]"])
    assert cfg.lora.rank == 8 and cfg.align.lam == 0.25 and cfg.merge.rule == "max_abs"
    assert cfg.data.task_sizes == [10, 90]
    assert cfg.align.methods == ["im_lca", "im"]
    flat = flatten(cfg)
    assert flat["lora.rank"] == 8 and flat["align.lam"] == 0.25 and "data.benchmark" in flat


def test_int_accepted_for_float():
    cfg = load_config(None, ["merge.alpha=1"])
    assert isinstance(cfg.merge.alpha, float) and cfg.merge.alpha == 1.0


@pytest.mark.parametrize("override, key, words", [
    ("lora.rnak=4", "lora.rnak", "unknown key"),
    ("lora.rank=0", "lora.rank", "must be >= 1"),
    ("lora.rank=abc", "lora.rank", "expected int"),
    ("align.lam=-0.1", "align.lam", "must be >= 0"),
    ("merge.alpha=0", "merge.alpha", "must be > 0"),
    ("merge.rule=magic", "merge.rule", "unknown value 'magic'"),
    ("data.benchmark=mnist", "data.benchmark", "unknown value 'mnist'"),
    ("model.backbone=resnet", "model.backbone", "unknown value 'resnet'"),
    ("align.compare=[im, lca]", "align.compare", "unknown value 'lca'"),
    ("train.device=tpu", "train.device", "unknown value 'tpu'"),
    ("lora.target=blocks[", "lora.target", "not a valid regex"),
    ("align.entropy_weight=-0.1", "align.entropy_weight", "must be >= 0"),
    ("align.logit_norm_temperature=0", "align.logit_norm_temperature", "must be > 0 or null"),
    ("model.pretrained_tag=vit_base_patch16_224.augreg_in21k", "model.pretrained_tag", "a timm weights tag"),
    ("lora.init=xavier", "lora.init", "unknown value 'xavier'; use one of gaussian, kaiming"),
])
def test_bad_values_name_the_key(override, key, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert err.value.key == key and words in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_yaml_and_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml: malformed YAML at line \d; fix the syntax"):
        load_config(write(tmp_path, "lora:\n  rank: [8\n"))
    with pytest.raises(ConfigError, match="config key 'optimiser': unknown key"):
        load_config(write(tmp_path, "optimiser:\n  lr: 1\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "vit_test_tiny"])
def test_pretrained_tag_needs_hub_weights(backbone):
    """The embedded Lite0 weights and the test ViT's own shapes have no timm weights to choose between."""
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"model.backbone={backbone}", "model.pretrained=false", "model.pretrained_tag=in1k"])
    assert err.value.key == "model.pretrained_tag" and "takes no timm hub weights" in str(err.value)
    assert load_config(None, [f"model.backbone={backbone}", "model.pretrained=false"]).model.pretrained_tag is None
