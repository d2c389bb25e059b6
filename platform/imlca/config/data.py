"""The `data:` section: which benchmark, where it lives, its split, transforms and loaders."""
from __future__ import annotations

from dataclasses import dataclass

from imlca.config.loading import choose, described, require
from imlca.registries import BENCHMARKS

PIPELINES = ("pil", "cached")  # per-image torchvision transforms | decoded-image cache + batched augmentation
INTERPOLATIONS = ("bilinear", "bicubic")  # the statistics/evaluation resize


@dataclass
class DataConfig:
    benchmark: str = described("cifar100", "the benchmark to learn (`imlca benchmarks` lists them)")
    root: str | None = described(None, "dataset root: a folder, or an s3:// / gs:// prefix filled by `imlca data "
                                       "push`; null: $IMLCA_DATA")
    image_size: int = described(224, "side of the square images the backbone sees (px)")
    normalize: bool = described(False, "normalise with the backbone's mean and std; false feeds raw [0, 1] pixels, "
                                       "as the reference does for the ViT")
    crop_scale_min: float = described(0.05, "smallest area fraction of the training RandomResizedCrop")
    # statistics/evaluation: Resize(int(ratio · image_size), interpolation) + CenterCrop(image_size)
    eval_interpolation: str = described("bilinear", "interpolation of the statistics/evaluation resize")
    eval_resize_ratio: float | None = described(1.0, "statistics/evaluation resize to ratio × image_size, then a "
                                                     "centre crop; null: the authors' (1 for CIFAR-100, else 256/224)")
    hflip: bool = described(True, "random horizontal flips in training")
    train_per_class: int | None = described(None, "keep at most this many training images per class; null: all")
    test_per_class: int | None = described(None, "keep at most this many test images per class; null: all")
    val_fraction: float = described(0.0, "fraction of each class's training images held out (seeded) for "
                                         "validation metrics val_*; 0: no validation split")
    task_sizes: list[int] | None = described(None, "classes per task (imagefolder); null: the benchmark's split")
    num_workers: int | None = described(0, "loader processes; null: the trial's CPUs (resources.num_cpus) less one")
    pipeline: str = described("pil", "pil: decode and augment per image in the loader; cached: images decoded "
                                     "once per node, augmented as batches on the device")
    cache_dir: str | None = described(None, "the decoded-image and downloaded-data cache; null: $IMLCA_CACHE, "
                                            "then ~/.cache/imlca")
    remote_decoded: bool = described(False, "with an s3:// / gs:// root and pipeline: cached, fetch the decoded "
                                            "images `imlca data push --decoded` stored there instead of the JPEGs "
                                            "(the JPEGs, saying so, where none is stored at this resolution)")

    def __post_init__(self) -> None:
        choose(self.benchmark, "benchmark", BENCHMARKS)
        require(self.image_size >= 8, "image_size", f"must be >= 8 (got {self.image_size})")
        require(0 < self.crop_scale_min <= 1, "crop_scale_min", f"must be in (0, 1] (got {self.crop_scale_min})")
        choose(self.eval_interpolation, "eval_interpolation", INTERPOLATIONS)
        require(self.eval_resize_ratio is None or self.eval_resize_ratio >= 1, "eval_resize_ratio",
                f"must be >= 1 (the centre crop needs the resized image at least image_size) or null "
                f"(got {self.eval_resize_ratio})")
        for key in ("train_per_class", "test_per_class"):
            value = getattr(self, key)
            require(value is None or value >= 1, key, f"must be >= 1 or null (got {value})")
        require(0 <= self.val_fraction < 1, "val_fraction", f"must be in [0, 1) (got {self.val_fraction})")
        if self.task_sizes is not None:
            require(len(self.task_sizes) > 0 and min(self.task_sizes) >= 1, "task_sizes",
                     f"must be a non-empty list of positive class counts (got {self.task_sizes})")
        require(self.num_workers is None or self.num_workers >= 0, "num_workers",
                f"must be >= 0 or null (got {self.num_workers})")
        choose(self.pipeline, "pipeline", PIPELINES)
        require(self.pipeline == "cached" or not self.remote_decoded, "remote_decoded",
                "the decoded copy feeds the cached pipeline only; set data.pipeline: cached, or "
                "data.remote_decoded: false")
