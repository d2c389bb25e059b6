"""Decoded-image cache: a benchmark part decoded once per node, kept as uint8 pixels on local disk, memory-mapped.

Each image is stored as the plain evaluation transform sees it before cropping: RGB, and resized (antialiased, the
same `v2.functional.resize` call with the same interpolation) so that its shorter side is at most the storage size
(the evaluation resize: `data.image_size` × `data.eval_resize_ratio`, with `data.eval_interpolation`);
smaller images (CIFAR-100's 32 px, the embedded 28 px digits) stay as they are and are upscaled on the device. So
the evaluation transform on a cached image gives the same pixels as on the original, and training crops keep their
scale and aspect distribution (they are drawn relative to the image), at the stored resolution.

On disk, `<cache root>/<key>/`: `pixels.u8` (every image's C×H×W bytes, one after another), `index.npy` int64
[N, 3] (byte offset, height, width), `meta.json` (fingerprint, size, count, CRC-32 of pixels and index). The key
hashes a fingerprint of the data (file paths, sizes and mtimes; or the bytes of in-memory images; plus the kept
indices and labels) with the storage size and interpolation, so changed data gets a new cache. Builds hold a lock
file, write into a temporary folder and rename it into place, so two processes building at once produce one cache;
a cache whose checksum or fingerprint does not match is rebuilt.

A node may instead fetch the parts ready-made from the bucket (`imlca.data.remote_decoded`): they come as
`DecodedImageSet`s, and `open_cache` then serves a benchmark's (per-class, validation) subset of one as a view of
the fetched memory map (its rows of the index), without copying a pixel.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from imlca.data.base import FileImageSet, ImageSet, TensorImageSet
from imlca.data.transforms import INTERPOLATION

VERSION = 1  # bump when the stored layout or the decoding changes
CHUNK = 1 << 24  # bytes per checksum read
_VERIFIED: set[str] = set()  # cache folders whose checksum this process has checked


def cache_root(cache_dir: str | None) -> Path:
    """`data.cache_dir`, else `$IMLCA_CACHE`, else ~/.cache/imlca/images: local disk of this node."""
    return Path(cache_dir or os.environ.get("IMLCA_CACHE") or Path.home() / ".cache" / "imlca" / "images")


def _feed(digest, images: ImageSet) -> None:
    if hasattr(images, "keep") and hasattr(images, "images"):  # load_benchmark's per-class subset of a part
        digest.update(b"subset" + np.asarray(images.keep, dtype=np.int64).tobytes())
        _feed(digest, images.images)
    elif isinstance(images, FileImageSet):
        for path in images.paths:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    elif isinstance(images, DecodedImageSet):  # fetched at another size than asked: its identity is its meta
        digest.update(json.dumps(images.decoded.meta, sort_keys=True).encode())
    elif isinstance(images, TensorImageSet):
        digest.update(str(tuple(images.images.shape)).encode() + images.images.contiguous().numpy().tobytes())
    else:
        raise TypeError(f"no fingerprint for {type(images).__name__}")
    digest.update(np.asarray(images.labels, dtype=np.int64).tobytes())


def fingerprint(images: ImageSet) -> str:
    digest = hashlib.sha256()
    _feed(digest, images)
    return digest.hexdigest()


def decode(images: ImageSet, index: int, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """uint8 [3, h, w]: image `index` as RGB, shorter side resized down to `size` (never up)."""
    image = TF.to_image(images.load(index)).as_subclass(torch.Tensor)  # PIL or tensor → uint8 [C, H, W]
    image = TF.grayscale_to_rgb(image) if image.shape[0] == 1 else image
    if min(image.shape[-2:]) > size:
        image = TF.resize(image, [size], interpolation=INTERPOLATION[interpolation], antialias=True)
    return image.contiguous()


def _checksum(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            crc = zlib.crc32(block, crc)
    return crc


class DecodedImages:
    """A built cache, opened read-only: `batch(indices)` gathers uint8 images from the memory map. With `rows`, a
    view holding only those images of the folder (in that order)."""

    def __init__(self, folder: Path, rows: np.ndarray | None = None):
        self.folder, self.rows = Path(folder), rows
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.index = np.load(self.folder / "index.npy")  # int64 [N, 3]: offset, height, width
        if rows is not None:
            self.index = self.index[rows]
        self._pixels: np.memmap | None = None

    def __getstate__(self) -> dict:  # loader workers reopen the map instead of receiving a copy of the pixels
        return {"folder": self.folder, "rows": self.rows}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"], state.get("rows"))

    def __len__(self) -> int:
        return len(self.index)

    @property
    def pixels(self) -> np.memmap:
        if self._pixels is None:
            self._pixels = np.memmap(self.folder / "pixels.u8", dtype=np.uint8, mode="r")
        return self._pixels

    @property
    def nbytes(self) -> int:
        return int(self.meta["bytes"])

    def image(self, i: int) -> torch.Tensor:
        offset, height, width = (int(v) for v in self.index[i])
        return torch.from_numpy(np.array(self.pixels[offset:offset + 3 * height * width])).view(3, height, width)

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 [B, 3, Hmax, Wmax] (each image top-left, zero padding) and int64 sizes [B, 2] (height, width)."""
        sizes = torch.from_numpy(self.index[np.asarray(indices, dtype=np.int64), 1:].copy())
        out = torch.zeros(len(sizes), 3, int(sizes[:, 0].max()), int(sizes[:, 1].max()), dtype=torch.uint8)
        for row, i in enumerate(indices):
            image = self.image(int(i))
            out[row, :, :image.shape[1], :image.shape[2]] = image
        return out, sizes


class DecodedImageSet(ImageSet):
    """A part fetched ready-decoded (`imlca.data.remote_decoded`): its images are the cache's, as uint8 tensors."""

    def __init__(self, decoded: DecodedImages, labels: np.ndarray):
        self.decoded, self.labels = decoded, np.asarray(labels, dtype=np.int64)

    def load(self, index: int) -> torch.Tensor:
        return self.decoded.image(index)


def _fetched_view(images: ImageSet, size: int, interpolation: str) -> DecodedImages | None:
    """`images` (a subset of a subset ... of a fetched DecodedImageSet stored at `size`, `interpolation`) as a view
    of the fetched cache; None for any other image set."""
    keep = None
    while hasattr(images, "keep") and hasattr(images, "images"):
        keep = images.keep if keep is None else images.keep[keep]  # outer positions → the inner set's
        images = images.images
    if not isinstance(images, DecodedImageSet):
        return None
    meta = images.decoded.meta
    if (meta["size"], meta.get("interpolation", "bilinear")) != (size, interpolation):
        return None
    return DecodedImages(images.decoded.folder, np.arange(len(images)) if keep is None else np.asarray(keep))


def _valid(folder: Path, expected: dict) -> bool:
    """Meta matches (version, fingerprint, size) and both data files have their recorded CRC-32."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if any(meta.get(k) != v for k, v in expected.items()):
            return False
        if str(folder) not in _VERIFIED:
            if (_checksum(folder / "pixels.u8"), _checksum(folder / "index.npy")) != (meta["crc_pixels"],
                                                                                     meta["crc_index"]):
                return False
            _VERIFIED.add(str(folder))
        return True
    except (OSError, ValueError, KeyError):
        return False


def _write(images: ImageSet, size: int, interpolation: str, folder: Path, threads: int) -> dict:
    """Decode every image (threads: PIL and torch release the GIL) into folder's files; → checksums and sizes."""
    index, offset = np.zeros((len(images), 3), dtype=np.int64), 0
    with open(folder / "pixels.u8", "wb") as out, ThreadPoolExecutor(max(1, threads)) as pool:
        for i, image in enumerate(pool.map(lambda k: decode(images, k, size, interpolation), range(len(images)))):
            index[i] = (offset, image.shape[1], image.shape[2])
            out.write(image.numpy().tobytes())
            offset += image.numel()
        out.flush()
        os.fsync(out.fileno())
    np.save(folder / "index.npy", index)
    return {"count": len(images), "bytes": offset, "crc_pixels": _checksum(folder / "pixels.u8"),
            "crc_index": _checksum(folder / "index.npy")}


def open_cache(images: ImageSet, size: int, root: Path, threads: int = 1,
               interpolation: str = "bilinear") -> DecodedImages:
    """The cache of `images` at storage size `size` (shorter side, downscaled with `interpolation`) under `root`,
    built first when missing, stale or corrupt.

    A corrupt image file raises DataError (one line naming it) while building; nothing is left behind. A part
    fetched ready-decoded at this size is served as a view of the fetched cache.
    """
    view = _fetched_view(images, size, interpolation)
    if view is not None:
        return view
    expected = {"version": VERSION, "fingerprint": fingerprint(images), "size": size}
    if interpolation != "bilinear":  # bilinear caches keep the key they had before the interpolation was a setting
        expected["interpolation"] = interpolation
    key = hashlib.sha256(json.dumps(expected, sort_keys=True).encode()).hexdigest()[:24]
    root.mkdir(parents=True, exist_ok=True)
    folder = root / key
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second builder waits here, then finds the first one's cache
        if not _valid(folder, expected):
            tmp = Path(tempfile.mkdtemp(prefix=f"{key}.tmp-", dir=root))
            try:
                meta = {**expected, **_write(images, size, interpolation, tmp, threads)}
                (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
                shutil.rmtree(folder, ignore_errors=True)
                os.rename(tmp, folder)
                _VERIFIED.add(str(folder))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return DecodedImages(folder)
