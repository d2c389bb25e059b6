"""CIFAR-100-C and CIFAR-100-P read from disk, and the same corruptions made on the fly with `imagecorruptions`.

On-disk layouts (Hendrycks & Dietterich, ICLR 2019); images are uint8 HxWx3 in CIFAR-100 test-set order:
  <root>/<corruption>.npy    [5·N, H, W, 3]     severities 1..5 in consecutive blocks of N
  <root>/labels.npy          [5·N]              CIFAR-100-C: the N test labels once per severity
  <root>/<perturbation>.npy  [N, T, H, W, 3]    CIFAR-100-P: one T-frame sequence per test image
  <root>/labels.npy          [N]                CIFAR-100-P: optional, else the caller's test labels
Arrays are memory-mapped, so only the slices evaluated are read.

`generate_corruptions` uses the `imagecorruptions` implementation, i.e. Hendrycks' ImageNet-C severity
parameters (tuned for 224-px images): its numbers are not comparable with the CIFAR-100-C files, whose
parameters were re-tuned for 32 px. No on-the-fly generator of CIFAR-100-P sequences is provided.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import sys
import types
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from imlca.data.base import ImageSet
from imlca.errors import ConfigError, DataError

# Hendrycks' file names: the 15 benchmark corruptions, then the 4 held-out ("validation") ones.
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate")
PERTURBATIONS = ("gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow", "brightness", "translate",
                 "rotate", "tilt", "scale", "speckle_noise", "gaussian_blur", "spatter", "shear")
SEVERITIES = (1, 2, 3, 4, 5)
MIN_SIDE = 32  # imagecorruptions refuses smaller images; they are upscaled to this, corrupted, scaled back

C_LAYOUT = "<corruption>.npy uint8 [5·N, H, W, 3] (severities 1..5 in blocks of N) + labels.npy [5·N]"
P_LAYOUT = "<perturbation>.npy uint8 [N, T≥2, H, W, 3] (one sequence per test image) + optional labels.npy [N]"


def present(root: str | Path, names: Iterable[str], layout: str = C_LAYOUT) -> list[str]:
    """The `names` whose `<name>.npy` exists under `root`, in the given order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"robustness data folder {root} does not exist; expected {layout}")
    return [name for name in names if (root / f"{name}.npy").is_file()]


def _load(path: Path, layout: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path} is missing; expected {layout}")
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path} ({err.__class__.__name__}); expected {layout}") from None


def _labels(path: Path, length: int, layout: str) -> np.ndarray:
    labels = _load(path, layout)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != length:
        raise DataError(f"{path} holds {labels.dtype} {labels.shape}, expected {length} integer labels; "
                        f"expected {layout}")
    return np.asarray(labels, dtype=np.int64)


def read_corruption(root: str | Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [5, N, H, W, 3] (memory-mapped, index = severity − 1) and labels int64 [5, N]."""
    path = Path(root) / f"{name}.npy"
    images = _load(path, C_LAYOUT)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) % 5 or not len(images):
        raise DataError(f"{path} holds {images.dtype} {images.shape}; expected {C_LAYOUT}")
    labels = _labels(Path(root) / "labels.npy", len(images), C_LAYOUT)
    n = len(images) // 5
    return images.reshape(5, n, *images.shape[1:]), labels.reshape(5, n)


def read_perturbation(root: str | Path, name: str,
                      test_labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sequences uint8 [N, T, H, W, 3] (memory-mapped) and labels int64 [N].

    Labels come from `<root>/labels.npy` where present, else from `test_labels` (the sequences follow the
    CIFAR-100 test-set order, so these are the test labels in dataset order).
    """
    path = Path(root) / f"{name}.npy"
    sequences = _load(path, P_LAYOUT)
    shape = sequences.shape
    if sequences.dtype != np.uint8 or sequences.ndim != 5 or shape[-1] != 3 or shape[1] < 2 or not shape[0]:
        raise DataError(f"{path} holds {sequences.dtype} {shape}; expected {P_LAYOUT}")
    labels_path = Path(root) / "labels.npy"
    if labels_path.is_file():
        return sequences, _labels(labels_path, len(sequences), P_LAYOUT)
    if test_labels is None:
        raise DataError(f"{labels_path} is missing and no test labels were given; add labels.npy [N] or pass "
                        "the CIFAR-100 test labels")
    if len(test_labels) != len(sequences):
        raise DataError(f"{path} has {len(sequences)} sequences but {len(test_labels)} test labels were given; "
                        "pass the full CIFAR-100 test labels in dataset order or add labels.npy")
    return sequences, np.asarray(test_labels, dtype=np.int64)


def as_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W], [N, H, W, 1] or [N, H, W, 3] → uint8 [N, H, W, 3] (grey repeated to three channels)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 [N, H, W, 3] images, got {images.dtype} {images.shape}")
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def stack_images(images: ImageSet, indices: Sequence[int], size: int) -> np.ndarray:
    """Images `indices` of any image set as uint8 [N, size, size, 3], resized (bicubic), for corrupting."""
    out = np.empty((len(indices), size, size, 3), dtype=np.uint8)
    for row, index in enumerate(indices):
        image = images.load(int(index))
        if isinstance(image, torch.Tensor):  # uint8 [C, H, W] → PIL
            image = Image.fromarray(as_rgb(image.permute(1, 2, 0).numpy()[None])[0])
        out[row] = np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC))
    return out


def generate_corruptions(images: np.ndarray, names: Sequence[str] = CORRUPTIONS,
                         severities: Sequence[int] = SEVERITIES, seed: int = 0) -> dict[tuple[str, int], np.ndarray]:
    """{(name, severity): uint8 [N, H, W, 3]} for `images` uint8 [N, H, W(, 3)].

    The library draws from numpy's global RNG; it is seeded from (seed, name, severity, image index) before each
    image, so an image's corruption does not depend on the others, and the caller's RNG state is restored after.
    """
    corrupt = _imagecorruptions()
    images = as_rgb(images)
    for name in names:
        if name not in CORRUPTIONS:
            raise ConfigError("corruptions", f"unknown corruption '{name}'; choose from {', '.join(CORRUPTIONS)}")
    for severity in severities:
        if severity not in SEVERITIES:
            raise ConfigError("severities", f"severity {severity} is out of range; choose from 1 to 5")
    state = np.random.get_state()
    try:
        return {(name, severity): np.stack([_corrupt_one(corrupt, image, name, severity, seed, i)
                                            for i, image in enumerate(images)])
                for name in names for severity in severities}
    finally:
        np.random.set_state(state)


def _corrupt_one(corrupt, image: np.ndarray, name: str, severity: int, seed: int, index: int) -> np.ndarray:
    entropy = [seed, CORRUPTIONS.index(name), severity, index]
    np.random.seed(np.random.SeedSequence(entropy).generate_state(1)[0])
    height, width = image.shape[:2]
    if min(height, width) >= MIN_SIDE:
        return corrupt(image, severity=severity, corruption_name=name)
    scale = MIN_SIDE / min(height, width)
    big = Image.fromarray(image).resize((math.ceil(width * scale), math.ceil(height * scale)), Image.BICUBIC)
    out = corrupt(np.asarray(big), severity=severity, corruption_name=name)
    return np.asarray(Image.fromarray(out).resize((width, height), Image.BICUBIC))


class _Overlay(types.ModuleType):
    """`module` with a few attributes replaced, seen only by the code that holds the overlay."""

    def __init__(self, module: types.ModuleType, **replaced):
        super().__init__(module.__name__)
        self._module = module
        self.__dict__.update(replaced)

    def __getattr__(self, name: str):
        return getattr(self._module, name)


@contextlib.contextmanager
def _pkg_resources_stand_in():
    """setuptools ≥ 81 has no `pkg_resources`; imagecorruptions imports it only for `resource_filename`."""
    if importlib.util.find_spec("pkg_resources") is not None:
        yield
        return
    stand_in = types.ModuleType("pkg_resources")
    stand_in.resource_filename = lambda module, name: str(Path(sys.modules[module].__file__).parent / name)
    sys.modules["pkg_resources"] = stand_in
    try:
        yield
    finally:
        del sys.modules["pkg_resources"]


@functools.cache
def _imagecorruptions():
    """`imagecorruptions.corrupt`, its 2020 code adapted to numpy 2, scikit-image ≥ 0.19 and setuptools ≥ 81."""
    try:
        with _pkg_resources_stand_in(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # scipy.ndimage.interpolation
            import imagecorruptions
            from imagecorruptions import corruptions as library
    except ImportError as err:
        raise DataError(f"on-the-fly corruptions need the imagecorruptions package ({err}); "
                        "install it with pip install 'imlca[robustness]'") from None
    import skimage
    import skimage.filters
    import skimage.util

    def gaussian(image, sigma=1.0, multichannel=None, **kwargs):  # `multichannel` left scikit-image in 0.19
        kwargs.setdefault("channel_axis", -1 if multichannel else None)
        return skimage.filters.gaussian(image, sigma=sigma, **kwargs)

    def random_noise(image, mode="gaussian", rng=None, **kwargs):  # its own RNG: derive it from np.random
        return skimage.util.random_noise(image, mode, np.random.randint(2**31) if rng is None else rng, **kwargs)

    library.np = _Overlay(np, float_=np.float64)  # fog's plasma_fractal uses np.float_, gone in numpy 2
    library.gaussian = gaussian
    library.sk = _Overlay(skimage, util=_Overlay(skimage.util, random_noise=random_noise))
    return imagecorruptions.corrupt
