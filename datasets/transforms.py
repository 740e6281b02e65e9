"""Joint image + mask transforms: the official SPNet (semseg) training recipe, on torchvision v2.

Training: random scale -> random rotation + random crop (padded with the image mean / ignore) ->
Gaussian blur -> horizontal flip -> optional photometric distortion -> float + normalize. Images are
resampled bilinearly, masks with nearest neighbour (torchvision v2 dispatches on
``tv_tensors.Mask``); rotation corners and crop padding are filled with the mean colour in the
image and with 255 (ignore) in the mask, so padding never becomes a class.

Where this differs from torchvision's stock steps, and why:

- ``RandomScale`` scales each image by a factor of *its own* size (semseg's ``RandScale``);
  torchvision's ``RandomResize``/``ScaleJitter`` target absolute sizes and ``RandomAffine`` keeps the
  canvas. Masks use nearest-exact sampling (pixel centres, like the bilinear image).
- ``RandomRotatedCrop`` equals ``RandomRotation`` + ``RandomCrop(pad_if_needed=True)`` but only
  rotates what the crop sees (tested against the two stock steps).
- The official recipe blurs and flips the whole image before cropping; we blur and flip the crop.
  Flipping commutes with a uniformly placed crop; blurring differs only in the crop's 2-pixel
  frame (reflected crop pixels instead of the neighbours outside it).

Together these take the Cityscapes training transforms of a 1024x2048 image from 277 ms (stock
steps in the official order) to 80 ms on one core (median of 48; ``scripts/benchmark_data.py``,
docs/data.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import query_size

from .base import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from ``scale_range``, relative to the input's own size."""

    def __init__(self, scale_range: Sequence[float]) -> None:
        super().__init__()
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {list(scale_range)}")
        self.scale_range = (float(low), float(high))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        low, high = self.scale_range
        scale = low + (high - low) * torch.rand(()).item()  # torch RNG, seeded per DataLoader worker
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        # Masks use nearest-exact, which samples pixel centres as bilinear does; plain nearest
        # (torchvision's mask default, cv2.INTER_NEAREST in the official code) samples corners and
        # shifts the mask against the image by up to half a source pixel (tests/test_transforms.py).
        mode = InterpolationMode.NEAREST_EXACT if isinstance(inpt, tv_tensors.Mask) else InterpolationMode.BILINEAR
        return self._call_kernel(F.resize, inpt, params["size"], interpolation=mode, antialias=True)


class RandomRotatedCrop(v2.Transform):
    """``RandomRotation(degrees)`` then ``RandomCrop(size, pad_if_needed=True)``, rotating only the crop.

    Rotating a whole 1.75x-scaled Cityscapes image to keep a 768x768 crop of it wastes most of the
    work (about 200 ms per image on one CPU core). This transform draws the same parameters (an
    angle, then a crop position in the rotated frame: uniform over the image, or uniform placement
    of a smaller image inside the crop) and rotates just the part of the input the crop can see,
    about the centre of the whole input. The output equals rotation then crop, except that pixels on
    the input's outer border blend with the fill linearly, where torchvision's ``rotate`` blends
    quadratically (tested).
    """

    def __init__(self, size: Sequence[int], degrees: Sequence[float], fill: dict[type, Any]) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.degrees = (float(degrees[0]), float(degrees[1]))
        self.fill = fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        angle = torch.empty(()).uniform_(*self.degrees).item()
        top = int(torch.randint(min(0, height - self.size[0]), max(0, height - self.size[0]) + 1, ()))
        left = int(torch.randint(min(0, width - self.size[1]), max(0, width - self.size[1]) + 1, ()))
        # The input region the crop sees: the crop's corners rotated back about the input's centre
        # (torchvision's convention: centre (W/2, H/2), positive angles counter-clockwise), plus
        # a 2-pixel margin for bilinear sampling. It always contains the crop window itself.
        cx, cy, a = width / 2, height / 2, math.radians(angle)
        xs, ys = [left, left + self.size[1]], [top, top + self.size[0]]
        corners = [(x - cx, y - cy) for x in xs for y in ys]
        src_x = [cx + x * math.cos(a) - y * math.sin(a) for x, y in corners] + xs
        src_y = [cy + x * math.sin(a) + y * math.cos(a) for x, y in corners] + ys
        x0, x1 = math.floor(min(src_x)) - 2, math.ceil(max(src_x)) + 2
        y0, y1 = math.floor(min(src_y)) - 2, math.ceil(max(src_y)) + 2
        return dict(angle=angle, top=top, left=left, height=height, width=width, window=(x0, y0, x1, y1))

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        fill = self.fill[type(inpt)] if type(inpt) in self.fill else 0
        height, width = params["height"], params["width"]
        x0, y0, x1, y1 = params["window"]
        # Cut the window out of the input, padding with the fill where it leaves the input.
        pad = [max(0, -x0), max(0, -y0), max(0, x1 - width), max(0, y1 - height)]
        window = F.crop(F.pad(inpt, pad, fill=fill), y0 + pad[1], x0 + pad[0], y1 - y0, x1 - x0)
        mode = InterpolationMode.NEAREST if isinstance(inpt, tv_tensors.Mask) else InterpolationMode.BILINEAR
        rotated = F.rotate(window, params["angle"], mode, center=[width / 2 - x0, height / 2 - y0], fill=fill)
        top, left = params["top"], params["left"]
        out = F.crop(rotated, top - y0, left - x0, *self.size).clone()
        # What lies outside the input's frame is padding, as RandomCrop(pad_if_needed) makes it.
        fill_value = torch.tensor(fill, dtype=out.dtype).reshape(-1, 1, 1) if out.ndim == 3 else fill
        out[..., : max(0, -top), :] = fill_value
        out[..., max(0, height - top) :, :] = fill_value
        out[..., : max(0, -left)] = fill_value
        out[..., max(0, width - left) :] = fill_value
        return out


def _fill(mean: Sequence[float]) -> dict[type, Any]:
    """Pad/rotation fill per type: the mean colour (uint8 image) and ignore (mask)."""
    return {tv_tensors.Image: tuple(round(255 * m) for m in mean), tv_tensors.Mask: IGNORE_INDEX}


def train_transforms(
    *,
    crop_size: Sequence[int],
    scale_range: Sequence[float] = (0.5, 2.0),
    rotate_range: Sequence[float] = (-10.0, 10.0),
    blur_prob: float = 0.5,
    flip_prob: float = 0.5,
    photometric: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """The training pipeline; steps whose probability or range is zero are left out."""
    steps: list[Any] = [RandomScale(scale_range)]
    if tuple(rotate_range) != (0, 0):
        steps.append(RandomRotatedCrop(crop_size, rotate_range, fill=_fill(mean)))
    else:
        steps.append(v2.RandomCrop(list(crop_size), pad_if_needed=True, fill=_fill(mean)))
    if blur_prob > 0:
        # cv2.GaussianBlur(img, (5, 5), 0) of the official recipe: sigma = 0.3 * ((5 - 1) / 2 - 1) + 0.8
        steps.append(v2.RandomApply([v2.GaussianBlur(5, sigma=1.1)], p=blur_prob))
    if flip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(flip_prob))
    if photometric:
        steps.append(v2.RandomPhotometricDistort(p=0.5))
    steps += normalize_steps(mean, std)
    return v2.Compose(steps)


def eval_transforms(*, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> v2.Compose:
    """Evaluation: the image at its own size, normalized; the mask untouched."""
    return v2.Compose(normalize_steps(mean, std))


def normalize_steps(mean: Sequence[float], std: Sequence[float]) -> list[Any]:
    # uint8 -> float in [0, 1] for the image only; the mask stays uint8 class ids.
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(list(mean), list(std)),
    ]
