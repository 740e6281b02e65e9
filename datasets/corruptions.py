"""Common corruptions of street images at five severities, for robustness evaluation.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR 2019, ImageNet-C), https://arxiv.org/abs/1903.12261; Kamann & Rother,
"Benchmarking the Robustness of Semantic Segmentation Models" (CVPR 2020), who corrupt Cityscapes
with these definitions. ``PARAMETERS`` holds ImageNet-C's values per severity (its
``make_imagenet_c.py``), in pixels where they are sizes; our own torch code, with these
differences: motion blur is ImageMagick's kernel written out (no ImageMagick), fog's plasma
fractal is our diamond-square as large as the image, defocus blur's disk is renormalised to sum 1,
and the result is rounded to uint8 (ImageNet-C truncates, then stores a JPEG at quality 85).

Every corruption maps a uint8 (3, H, W) RGB image to another; severity 0 is the identity. Random
draws come from a generator seeded with (seed, dataset index), never the global one, so an image
is corrupted alike on every rank and in every run.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .base import apply_transforms

SEVERITIES = (1, 2, 3, 4, 5)
PARAMETERS: dict[str, tuple[Any, ...]] = {  # ImageNet-C's, severity 1..5
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # standard deviation, intensities in [0, 1]
    "shot_noise": (60, 25, 12, 5, 3),  # photons per unit intensity (fewer: noisier)
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),  # (radius, sigma) in pixels
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),  # (disk radius, its anti-alias sigma)
    "jpeg": (25, 18, 15, 10, 7),  # JPEG quality
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),  # added to HSV value
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),  # factor on the distance to the channel mean
    "fog": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),  # (thickness, fractal decay)
}


def gaussian_noise(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    return x + c * torch.randn(x.shape, generator=g)


def shot_noise(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    return torch.poisson(x * c, generator=g) / c


def motion_blur(x: torch.Tensor, c: tuple[int, float], g: torch.Generator) -> torch.Tensor:
    """ImageMagick's ``-motion-blur radius x sigma + angle``, the angle drawn in [-45, 45) degrees: a one-sided
    Gaussian along the direction of motion, taps at whole pixels, edge pixels repeated beyond the border."""
    radius, sigma = c
    angle = math.radians(-45 + 90 * torch.rand((), generator=g, dtype=torch.float64).item())
    taps = torch.arange(2 * radius + 1, dtype=torch.float64)
    weights = torch.exp(-(taps**2) / (2 * sigma**2))
    weights /= weights.sum()
    # ImageMagick's offsets: ceil(i * cos - 0.5) across, ceil(i * sin - 0.5) down
    dx = [math.ceil(i * math.cos(angle) - 0.5) for i in range(len(taps))]
    dy = [math.ceil(i * math.sin(angle) - 0.5) for i in range(len(taps))]
    pad = max(map(abs, dx + dy))
    padded = F.pad(x[None], (pad,) * 4, mode="replicate")[0]
    height, width = x.shape[-2:]
    out = torch.zeros_like(x)
    for w, i, j in zip(weights.tolist(), dy, dx):
        out += w * padded[:, pad + i : pad + i + height, pad + j : pad + j + width]
    return out


def defocus_kernel(radius: int, alias_sigma: float) -> torch.Tensor:
    """ImageNet-C's ``disk``: a disk of ``radius`` on a grid of at least 17x17, anti-aliased by a 3x3 (5x5 beyond
    radius 8) Gaussian of ``alias_sigma`` with mirrored borders, as cv2.GaussianBlur; renormalised to sum 1."""
    half = max(radius, 8)
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).double()
    disk /= disk.sum()
    k = 1 if radius <= 8 else 2
    gauss = torch.exp(-(torch.arange(-k, k + 1, dtype=torch.float64) ** 2) / (2 * alias_sigma**2))
    gauss /= gauss.sum()
    blurred = F.conv2d(F.pad(disk[None, None], (k,) * 4, mode="reflect"), (gauss[:, None] * gauss[None, :])[None, None])
    return (blurred / blurred.sum())[0, 0]


def defocus_blur(x: torch.Tensor, c: tuple[int, float], g: torch.Generator) -> torch.Tensor:
    kernel = defocus_kernel(*c).to(x.dtype)
    half = kernel.shape[-1] // 2  # borders mirrored without repeating the edge, as cv2.filter2D
    padded = F.pad(x[None], (half,) * 4, mode="reflect")
    return F.conv2d(padded, kernel.expand(3, 1, *kernel.shape), groups=3)[0]


def jpeg(x: torch.Tensor, c: int, g: torch.Generator) -> torch.Tensor:
    """Pillow's JPEG at quality ``c`` (4:2:0 chroma), as ImageNet-C."""
    buffer = io.BytesIO()
    Image.fromarray(_to_uint8(x).permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=c)
    with Image.open(buffer) as decoded:
        return torch.from_numpy(np.array(decoded.convert("RGB"))).permute(2, 0, 1) / 255


def brightness(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    """HSV value + c, hue and saturation kept (ImageNet-C converts to HSV and back). With them fixed, RGB is
    linear in the value V = max(R, G, B): the pixel scales by min(V + c, 1) / V; black becomes grey c."""
    value = x.amax(0, keepdim=True)
    brighter = (value + c).clamp(max=1)
    return torch.where(value > 0, x * brighter / value.clamp(min=1e-12), brighter)


def contrast(x: torch.Tensor, c: float, g: torch.Generator) -> torch.Tensor:
    mean = x.mean((1, 2), keepdim=True)
    return (x - mean) * c + mean


def fog(x: torch.Tensor, c: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    thickness, decay = c
    height, width = x.shape[-2:]
    size = 1 << (max(height, width) - 1).bit_length()  # ImageNet-C: 256 for 224x224 images
    haze = plasma_fractal(size, decay, g)[:height, :width].to(x.dtype)
    peak = x.max()
    return (x + thickness * haze) * peak / (peak + thickness)


def plasma_fractal(size: int, decay: float, g: torch.Generator) -> torch.Tensor:
    """(size, size) heightmap in [0, 1] by diamond-square on a torus (size a power of 2): each new point is
    the mean of its 4 neighbours plus uniform noise whose amplitude shrinks by ``decay`` at each halving."""
    heights = torch.zeros(size, size, dtype=torch.float64)
    step, wibble = size, 100.0

    def wibbled(total: torch.Tensor) -> torch.Tensor:
        return total / 4 + wibble * wibble * (2 * torch.rand(total.shape, generator=g, dtype=torch.float64) - 1)

    while step >= 2:
        half = step // 2
        corners = heights[0::step, 0::step]
        square = corners + corners.roll(-1, 0)
        heights[half::step, half::step] = wibbled(square + square.roll(-1, 1))  # square centres
        centres = heights[half::step, half::step]
        # diamond centres: mid-edges, between two corners and two square centres
        heights[0::step, half::step] = wibbled(centres + centres.roll(1, 0) + corners + corners.roll(-1, 1))
        heights[half::step, 0::step] = wibbled(centres + centres.roll(1, 1) + corners + corners.roll(-1, 0))
        step, wibble = half, wibble / decay
    heights -= heights.min()
    return heights / heights.max()


CORRUPTIONS: dict[str, Callable[[torch.Tensor, Any, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "motion_blur": motion_blur,
    "defocus_blur": defocus_blur,
    "jpeg": jpeg,
    "brightness": brightness,
    "contrast": contrast,
    "fog": fog,
}


def image_generator(seed: int, index: int) -> torch.Generator:
    """A generator of its own for image ``index``: independent streams for every (seed, index) pair."""
    high, low = np.random.SeedSequence([seed, index]).generate_state(2)
    return torch.Generator().manual_seed(int(high) << 32 | int(low))


def check(name: str, severity: int) -> None:
    """A ValueError naming the choices for an unknown corruption or severity."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in (0, *SEVERITIES):
        raise ValueError(f"severity {severity} of {name}: must be 0 (none) or 1..5")


def corrupt(image: torch.Tensor, name: str, severity: int, *, seed: int = 0, index: int = 0) -> torch.Tensor:
    """``image`` (uint8, (3, H, W)) under corruption ``name`` at ``severity`` (0: the image itself)."""
    check(name, severity)
    if severity == 0:
        return image
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"corruptions take uint8 (3, H, W) RGB images, got {image.dtype} {tuple(image.shape)}")
    x = image.float() / 255
    out = CORRUPTIONS[name](x, PARAMETERS[name][severity - 1], image_generator(seed, index))
    return _to_uint8(out)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


@dataclass(frozen=True)
class Corruption:
    """What one evaluation applies: a name of ``CORRUPTIONS``, its severity, the seed of its draws."""

    name: str
    severity: int
    seed: int = 0


class CorruptedDataset(Dataset):
    """The samples of ``dataset`` (read without transforms) with the image corrupted, then ``transforms``.

    The corruption of sample ``index`` depends on (seed, index) only: the same whichever process or
    DataLoader worker reads it. Carries the dataset's ``classes``, ``palette`` and mIoU convention.
    """

    def __init__(self, dataset: Dataset, corruption: Corruption, transforms: Callable[..., Any] | None) -> None:
        check(corruption.name, corruption.severity)
        self.dataset, self.corruption, self.transforms = dataset, corruption, transforms
        self.classes, self.palette = dataset.classes, dataset.palette
        self.miou_over_all_classes = getattr(dataset, "miou_over_all_classes", False)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])
        c = self.corruption
        sample["image"] = tv_tensors.Image(corrupt(sample["image"], c.name, c.severity, seed=c.seed, index=index))
        return apply_transforms(sample, self.transforms)
