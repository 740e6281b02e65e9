"""What every dataset shares: pairing images with masks, decoding, label mapping and validation.

A dataset is a list of (image path, mask path) pairs plus a 256-entry lookup table from the values
stored in the mask files to train ids (255 = ignore). Reading a sample checks what silently ruins
training in this field: unreadable files, image/mask size mismatches and mask values that are
neither a class nor ignore (the classic wrong-label-space failure) all raise an error naming the
file and the fix. Nothing is skipped unless the user asks (``allow_unpaired``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from utils.losses import IGNORE_INDEX as IGNORE_INDEX  # defined where the loss ignores it; re-exported here

logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """The data on disk would train wrongly; the message names the file(s) and the fix."""


class MissingFolderError(DatasetError):
    """A split's folder is absent; ``path`` lets the dataset doctor say so in one line for optional splits."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def require_dir(path: Path, layout: str) -> Path:
    """``path`` if it is a directory, else an error that shows the expected layout."""
    if not path.is_dir():
        raise MissingFolderError(
            f"folder not found: {path}\nExpected layout:\n{layout}\nSet data.root=/path/to/the/root.", path
        )
    return path


def pair_files(
    images: dict[str, Path],
    masks: dict[str, Path],
    *,
    what: str,
    allow_unpaired: bool,
) -> list[tuple[Path, Path]]:
    """Pair images and masks by key; unpaired files are an error unless ``allow_unpaired``."""
    no_mask = sorted(k for k in images if k not in masks)
    no_image = sorted(k for k in masks if k not in images)
    problems = []
    for keys, files, text in ((no_mask, images, "images without a mask"), (no_image, masks, "masks without an image")):
        if keys:
            shown = "\n  ".join(str(files[k]) for k in keys[:5])
            problems.append(f"{len(keys)} {text}, e.g.\n  {shown}")
    if problems:
        message = f"{what}: " + "\n".join(problems)
        if not allow_unpaired:
            raise DatasetError(message + "\nFix the files, or set allow_unpaired: true to leave them out.")
        logger.warning("%s\n(left out because allow_unpaired is set)", message)
    return [(images[k], masks[k]) for k in sorted(images) if k in masks]


# Modes with 8 bits per channel, which convert("RGB") turns into RGB without losing data. Pillow
# opens 48-bit RGB PNGs as plain "RGB" (the high byte of each channel), so they read correctly too.
_EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})
# 16-bit greyscale; some Pillow versions open 16-bit PNGs as 32-bit "I".
_INTEGER_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


class ImageTooLargeError(DatasetError):
    """An image with more pixels than the limit (Pillow's guard against decompression bombs, or the user's)."""


LIMIT_KEY = "data.max_image_pixels"  # where a dataset's limit is set; the scripts' flag is --max-pixels


@contextlib.contextmanager
def _open_image(path: Path, what: str, max_pixels: int | None, limit_key: str) -> Iterator[Image.Image]:
    """``Image.open`` refusing images of more than ``max_pixels`` pixels in one line that names the file.

    ``max_pixels`` None: Pillow's limit, ``2 * Image.MAX_IMAGE_PIXELS`` (178,956,970 pixels unless
    changed), above which Pillow raises ``DecompressionBombError``, a traceback without the file
    name. Pillow's own check is off while the file is open and decoded, so that a raised limit
    works; like Pillow's setting, that is process-wide (the readers here run one per process).
    """
    pillow = Image.MAX_IMAGE_PIXELS
    limit = max_pixels if max_pixels is not None else None if pillow is None else 2 * pillow
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as image:
            width, height = image.size
            pixels = width * height
            if limit is not None and pixels > limit:
                by = f"set by {limit_key}" if max_pixels is not None else "Pillow's guard against decompression bombs"
                fix = f"{limit_key} {pixels}" if limit_key.startswith("--") else f"{limit_key}={pixels}"
                raise ImageTooLargeError(
                    f"{what} {path} is {width}x{height} = {pixels:,} pixels, over the limit of {limit:,} ({by}); "
                    f"if you trust the file, raise the limit: {fix}"
                )
            yield image
    finally:
        Image.MAX_IMAGE_PIXELS = pillow


def read_image(path: Path, max_pixels: int | None = None, limit_key: str = LIMIT_KEY) -> torch.Tensor:
    """(3, H, W) uint8 RGB; 16-bit greyscale is scaled to 8 bits, not clipped, and other modes are refused.

    convert("RGB") clips 16-bit values at 255, which turns a 16-bit image almost white and trains on
    it silently. Decoded with Pillow: torchvision.io's decoders are deprecated since torchvision 0.29
    (in favour of TorchCodec, one more dependency). Measured on 1024x2048 PNGs: 65 ms vs 60 ms.
    An image over ``max_pixels`` is an ``ImageTooLargeError`` naming ``limit_key`` (``_open_image``).
    """
    try:
        with _open_image(path, "image", max_pixels, limit_key) as image:
            mode = image.mode
            if mode in _EIGHT_BIT_MODES:
                array = np.array(image.convert("RGB") if mode != "RGB" else image)
            elif mode in _INTEGER_MODES:
                array = np.array(image)
            else:
                array = None
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError) as err:  # Pillow's errors for corrupt or truncated files
        raise DatasetError(f"cannot decode image {path}: {err}. Re-download or remove the file.") from err
    if array is None:
        kind = "a 32-bit float" if mode == "F" else f"an unsupported {mode}"
        raise DatasetError(f"image {path} is {kind} image (mode {mode}); convert it to 8-bit RGB (PNG or JPEG)")
    if mode in _INTEGER_MODES:
        array = _grey16_to_rgb8(array, path, mode)
    return torch.from_numpy(array).permute(2, 0, 1)


def _grey16_to_rgb8(array: np.ndarray, path: Path, mode: str) -> np.ndarray:
    """(H, W) values 0..65535 -> (H, W, 3) uint8 round(v / 257): exact for 8-bit values saved as v * 257."""
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if low < 0 or high > 65535:
        raise DatasetError(
            f"image {path} is a 32-bit integer image (mode {mode}) with values {low}..{high}, outside the 16-bit "
            "range 0..65535; convert it to 8-bit RGB (PNG or JPEG)"
        )
    grey = ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v / 257) in integers
    return np.repeat(grey[:, :, None], 3, axis=2)


def read_mask(path: Path, max_pixels: int | None = None, limit_key: str = LIMIT_KEY) -> torch.Tensor:
    """(H, W) uint8 label values, as stored: palette PNGs give their indices, not their colours."""
    try:
        with _open_image(path, "mask", max_pixels, limit_key) as image:
            mode = image.mode
            array = np.array(image.convert("L") if mode == "1" else image)
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"cannot decode mask {path}: {err}. Re-download or remove the file.") from err
    if array.ndim != 2 or array.dtype != np.uint8:
        raise DatasetError(
            f"mask {path} is a {mode} image; masks must be single-channel 8-bit images of class ids "
            "(mode L or P), not colour-coded RGB or 16-bit"
        )
    return torch.from_numpy(array)


def read_color_mask(path: Path, max_pixels: int | None = None, limit_key: str = LIMIT_KEY) -> np.ndarray:
    """(H, W, 3) uint8 colours of an RGB (or RGBA, alpha dropped; or palette) mask."""
    try:
        with _open_image(path, "mask", max_pixels, limit_key) as image:
            mode = image.mode
            array = np.array(image.convert("RGB")) if mode in ("RGB", "RGBA", "RGBX", "P", "PA") else None
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"cannot decode mask {path}: {err}. Re-download or remove the file.") from err
    if array is None:
        raise DatasetError(
            f"mask {path} is a {mode} image; with mask_format: rgb, masks must be 8-bit RGB colour images"
        )
    return array


def describe_values(values: Sequence[int]) -> str:
    return ", ".join(map(str, values[:10])) + (f" ... ({len(values)} values)" if len(values) > 10 else "")


class SegmentationDataset(Dataset):
    """Image/mask pairs whose mask values map to train ids through ``lookup``.

    ``lookup`` is a 256-entry table: the train id (0..num_classes-1 or 255) of each value a mask file
    may hold, and -1 for values that must never appear. Returns ``{"image", "mask", "name"}``:
    the image after ``transforms`` (by default a uint8 ``tv_tensors.Image``), the mask as a uint8
    ``tv_tensors.Mask`` of train ids with 255 for ignore, and the sample's name. Images and masks of
    more than ``max_pixels`` pixels are refused (``_open_image``; ``build_dataset`` sets it from
    ``data.max_image_pixels``, None: Pillow's limit).
    """

    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    label_help = "expected the dataset's class ids and 255 for ignore"
    # How the dataset's official benchmark averages IoU: over the classes present in the ground
    # truth or the prediction (Cityscapes evaluator), or over all classes, absent ones as 0 (ADE20K).
    miou_over_all_classes = False
    max_pixels: int | None = None

    def __init__(
        self,
        samples: list[tuple[Path, Path | None]],
        lookup: torch.Tensor,
        *,
        transforms: Callable[..., Any] | None = None,
    ) -> None:
        if lookup.shape != (256,):
            raise ValueError("lookup must have 256 entries, one per uint8 value")
        self.samples = samples
        self.lookup = lookup
        self.transforms = transforms

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, index: int) -> str:
        return self.samples[index][0].stem

    def raw_mask(self, index: int, limit_key: str = LIMIT_KEY) -> torch.Tensor:
        """(H, W) uint8 values of sample ``index``'s mask as ``lookup`` takes them (here: as stored)."""
        return read_mask(self.samples[index][1], self.max_pixels, limit_key)

    def load_mask(self, index: int) -> torch.Tensor:
        """The mask of sample ``index`` in train ids, validated, without transforms."""
        path = self.samples[index][1]
        raw = self.raw_mask(index)
        mapped = self.lookup[raw.long()]
        if (mapped < 0).any():
            bad = torch.unique(raw[mapped < 0]).tolist()
            raise DatasetError(f"{path}: label value(s) {describe_values(bad)} are invalid here ({self.label_help})")
        return mapped.to(torch.uint8)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, mask_path = self.samples[index]
        image = tv_tensors.Image(read_image(image_path, self.max_pixels))
        sample: dict[str, Any] = {"image": image, "name": self.name(index)}
        if mask_path is not None:
            mask = self.load_mask(index)
            if mask.shape != image.shape[-2:]:
                raise DatasetError(
                    f"{mask_path}: mask size {tuple(mask.shape)} differs from image size "
                    f"{tuple(image.shape[-2:])} of {image_path}"
                )
            sample["mask"] = tv_tensors.Mask(mask)
        return apply_transforms(sample, self.transforms)


def apply_transforms(sample: dict[str, Any], transforms: Callable[..., Any] | None) -> dict[str, Any]:
    """``sample`` with ``transforms`` applied to its image and, when it has one, its mask (jointly)."""
    if transforms is not None:
        if "mask" in sample:
            sample["image"], sample["mask"] = transforms(sample["image"], sample["mask"])
        else:
            sample["image"] = transforms(sample["image"])
    return sample


def make_lookup(mapping: dict[int, int]) -> torch.Tensor:
    """256-entry int16 table from {stored value: train id}; every other value is invalid (-1)."""
    table = torch.full((256,), -1, dtype=torch.int16)
    for value, train_id in mapping.items():
        table[value] = train_id
    return table
