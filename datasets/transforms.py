"""Joint image + mask transforms: the official SPNet (semseg) training recipe.

Training runs the official steps (``util/transform.py`` and ``tool/train.py`` of
github.com/Andrew-Qibin/SPNet) in their order: RandScale -> RandRotate (p 0.5) ->
RandomGaussianBlur (p 0.5) -> RandomHorizontalFlip (p 0.5) -> Crop('rand') padded with the mean
colour / ignore -> normalize, then optionally a photometric distortion (not in the official recipe).
``ScaleRotateBlurFlipCrop`` does the five geometric steps in one and computes only the pixels the
crop keeps: the official order resizes, rotates and blurs a whole image up to 1.75x the Cityscapes
size to keep a 768x768 crop of it.

Matching the official code, on the same random draws (``tests/test_official_recipe.py`` runs a
transcription of it through OpenCV; images agree within 1 grey level):

- resizing is cv2.INTER_LINEAR: bilinear at cv2's sample positions ((i + 0.5) / scale - 0.5, from
  the drawn scale, not the rounded output size), without antialiasing;
- rotation is about cv2's centre (w / 2, h / 2 in pixel-index coordinates), bilinear, blending the
  image border linearly with the fill;
- the blur is cv2.GaussianBlur((5, 5), 0), i.e. the kernel [1, 4, 6, 4, 1] / 16 with reflect-101
  borders, of the whole rotated image: where the crop lies inside the image its neighbours outside
  the crop are computed and used, and the padding is never blurred;
- the crop offset is drawn uniformly in the image padded symmetrically to the crop size (the
  smaller half of an odd padding before), after the flip; so a smaller image stays centred;
- the image is float from the first resize on, never rounded in between, padded and rotated in with
  the exact mean colour, as the official float32 pipeline.

What differs, and why:

- masks are resized nearest-exact (the source pixel under each output pixel's centre, as the
  bilinear image samples); cv2.INTER_NEAREST takes the pixel under the output pixel's top-left
  corner, which shifts the mask against the image by up to half a source pixel when downscaling.
  Both agree at integer upscaling factors (tested);
- random numbers come from torch, seeded per sample (``datasets/sampler.py``), not from Python's
  ``random`` seeded per worker.

Cityscapes training transforms of a 1024x2048 image take 37 ms on one core (median of 48;
``scripts/benchmark_data.py``, docs/data.md), less than half of the earlier torchvision steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn.functional import grid_sample, pad
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import query_size

from .base import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ScaleRotateBlurFlipCrop(v2.Transform):
    """semseg's RandScale, RandRotate, RandomGaussianBlur, RandomHorizontalFlip, Crop('rand') as one step.

    Draws what the official steps draw, in their order, and gives their output (see the module
    docstring for the mask's one difference) while computing only the crop. The image comes out as
    float32 in [0, 1]; the mask as it came in.
    """

    def __init__(
        self,
        size: Sequence[int],
        scale_range: Sequence[float],
        rotate_range: Sequence[float],
        *,
        rotate_prob: float = 0.5,
        blur_prob: float = 0.5,
        flip_prob: float = 0.5,
        fill: dict[type, Any],
    ) -> None:
        super().__init__()
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {list(scale_range)}")
        self.size = (int(size[0]), int(size[1]))
        self.scale_range = (float(low), float(high))
        self.rotate_range = (float(rotate_range[0]), float(rotate_range[1]))
        self.rotate_prob, self.blur_prob, self.flip_prob = rotate_prob, blur_prob, flip_prob
        self.fill = fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = query_size(flat_inputs)
        low, high = self.scale_range
        scale = low + (high - low) * _uniform()
        # cv2.resize(fx=scale, fy=scale) rounds the output size to nearest (ties to even, as round)
        h, w = max(1, round(height * scale)), max(1, round(width * scale))
        angle = None
        if _uniform() < self.rotate_prob:
            angle = self.rotate_range[0] + (self.rotate_range[1] - self.rotate_range[0]) * _uniform()
        blur = _uniform() < self.blur_prob
        flip = _uniform() < self.flip_prob
        # Crop('rand'): an offset into the flipped image padded to at least the crop size
        top = int(torch.randint(max(h - self.size[0], 0) + 1, ()))
        left = int(torch.randint(max(w - self.size[1], 0) + 1, ()))
        return dict(scale=scale, height=h, width=w, angle=angle, blur=blur, flip=flip, top=top, left=left)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        is_mask = isinstance(inpt, tv_tensors.Mask)
        fill = self.fill[tv_tensors.Mask if is_mask else tv_tensors.Image]
        crop_h, crop_w = self.size
        h, w = params["height"], params["width"]
        # The crop in the frame of the scaled (rotated, blurred) image before the flip. Crop pads
        # int(pad / 2) before the image and the rest after it; flipping mirrors the crop's position.
        top = params["top"] - max(crop_h - h, 0) // 2
        left = params["left"] - max(crop_w - w, 0) // 2
        if params["flip"]:
            left = w - crop_w - left
        # The part of the crop inside the image (the rest is padding) and the region to compute:
        # for the blur, up to 2 more pixels of the image on each side.
        y0, y1, x0, x1 = max(top, 0), min(top + crop_h, h), max(left, 0), min(left + crop_w, w)
        blur = params["blur"] and not is_mask
        m = 2 if blur else 0
        rows, cols = (max(y0 - m, 0), min(y1 + m, h)), (max(x0 - m, 0), min(x1 + m, w))
        x = inpt.as_subclass(torch.Tensor)
        # cv2.resize copies the input when the rounded size is unchanged, whatever the scale
        scale = 1.0 if (h, w) == tuple(x.shape[-2:]) else params["scale"]
        if params["angle"]:
            region = _rotated_region(x, scale, (h, w), params["angle"], rows, cols, fill, is_mask)
        else:
            region = _resized_region(x, scale, rows, cols, is_mask)
        if blur:
            region = _blur(region)
        out = _canvas(region, crop_h, crop_w, fill)
        out[..., y0 - top : y1 - top, x0 - left : x1 - left] = region[
            ..., y0 - rows[0] : y1 - rows[0], x0 - cols[0] : x1 - cols[0]
        ]
        if params["flip"]:
            out = out.flip(-1)
        return tv_tensors.wrap(out, like=inpt)


def _uniform() -> float:
    return torch.rand(()).item()  # torch RNG, seeded per sample (datasets/sampler.py)


def _canvas(like: torch.Tensor, height: int, width: int, fill: Any) -> torch.Tensor:
    """A (..., height, width) tensor of ``like``'s dtype holding ``fill`` (one value, or one per channel)."""
    out = like.new_empty((*like.shape[:-2], height, width))
    out[...] = torch.tensor(fill, dtype=like.dtype).reshape(-1, 1, 1) if like.ndim == 3 else fill
    return out


def _resized_region(x: torch.Tensor, scale: float, rows: tuple[int, int], cols: tuple[int, int], nearest: bool):
    """``rows`` x ``cols`` ([start, stop) each) of ``cv2.resize(x, None, fx=scale, fy=scale)``.

    Output pixel i samples input position (i + 0.5) / scale - 0.5 bilinearly, clamped to the image
    (cv2.INTER_LINEAR); images come out as float in [0, 1]. Masks take the pixel under
    (i + 0.5) / scale (nearest-exact, see the module docstring).
    """
    ys = (torch.arange(*rows, dtype=torch.float64) + 0.5) / scale
    xs = (torch.arange(*cols, dtype=torch.float64) + 0.5) / scale
    if nearest:
        iy, ix = ys.long().clamp(max=x.shape[-2] - 1), xs.long().clamp(max=x.shape[-1] - 1)
        return x.index_select(-2, iy).mT.contiguous().index_select(-2, ix).mT  # rows, then columns as rows
    if not (len(ys) and len(xs)):  # a region rotated in from outside the image reads nothing
        return torch.empty((*x.shape[:-2], len(ys), len(xs)))
    iy0, iy1, wy = _taps(ys - 0.5, x.shape[-2])
    ix0, ix1, wx = _taps(xs - 0.5, x.shape[-1])
    # only the block of the input that the taps reach becomes float
    top, left = int(iy0[0]), int(ix0[0])
    x = F.to_dtype(x[..., top : int(iy1[-1]) + 1, left : int(ix1[-1]) + 1], torch.float32, scale=True)
    x = torch.lerp(x.index_select(-2, iy0 - top), x.index_select(-2, iy1 - top), wy[:, None])
    x = x.mT.contiguous()  # columns as rows: selecting rows is several times faster than selecting columns
    return torch.lerp(x.index_select(-2, ix0 - left), x.index_select(-2, ix1 - left), wx[:, None]).mT


def _taps(pos: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear interpolation at ``pos`` clamped to [0, size - 1]: the two pixel indices and the second's weight."""
    pos = pos.clamp(0, size - 1)
    first = pos.long()
    return first, (first + 1).clamp(max=size - 1), (pos - first).float()


def _rotated_region(x, scale, size, angle, rows, cols, fill, nearest):
    """``rows`` x ``cols`` of ``cv2.warpAffine`` of the scaled image (``size``) by
    ``cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1)``, bilinear (masks: nearest), border ``fill``."""
    h, w = size
    a = math.radians(angle)
    dy = torch.arange(*rows, dtype=torch.float64)[:, None] - h / 2
    dx = torch.arange(*cols, dtype=torch.float64)[None, :] - w / 2
    # each output pixel samples the scaled image where the rotation takes it from
    src_x = w / 2 + math.cos(a) * dx - math.sin(a) * dy
    src_y = h / 2 + math.sin(a) * dx + math.cos(a) * dy
    # the scaled pixels the samples reach, with the fill where they leave the image
    top, left = math.floor(src_y.min()), math.floor(src_x.min())
    bottom, right = math.floor(src_y.max()) + 2, math.floor(src_x.max()) + 2
    inner_rows = (min(max(top, 0), h), min(max(bottom, 0), h))
    inner_cols = (min(max(left, 0), w), min(max(right, 0), w))
    inner = _resized_region(x, scale, inner_rows, inner_cols, nearest)
    source = _canvas(inner, bottom - top, right - left, fill)
    source[..., inner_rows[0] - top : inner_rows[1] - top, inner_cols[0] - left : inner_cols[1] - left] = inner
    # grid_sample's coordinates: -1 and 1 are the outer edges of the source (align_corners=False)
    grid = torch.stack([(2 * (src_x - left) + 1) / (right - left) - 1, (2 * (src_y - top) + 1) / (bottom - top) - 1])
    grid = grid.permute(1, 2, 0)[None].float()
    source = source.float().reshape(1, -1, *source.shape[-2:])
    out = grid_sample(source, grid, mode="nearest" if nearest else "bilinear", align_corners=False)
    return out.reshape(*inner.shape[:-2], *out.shape[-2:]).to(inner.dtype)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """cv2.GaussianBlur(x, (5, 5), 0): OpenCV's fixed size-5 kernel [1, 4, 6, 4, 1] / 16, reflect-101 borders."""
    x = pad(x[None], [2, 2, 2, 2], mode="reflect")[0]
    for _ in range(2):  # horizontally, then (transposed) vertically, as cv2's separable filter
        x = ((x[..., :-4] + x[..., 4:]) * 0.0625 + (x[..., 1:-3] + x[..., 3:-1]) * 0.25 + x[..., 2:-2] * 0.375).mT
    return x


def train_transforms(
    *,
    crop_size: Sequence[int],
    scale_range: Sequence[float] = (0.5, 2.0),
    rotate_range: Sequence[float] = (-10.0, 10.0),
    rotate_prob: float = 0.5,
    blur_prob: float = 0.5,
    flip_prob: float = 0.5,
    photometric: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """The official training pipeline (``rotate_prob``: RandRotate's p, which the official code leaves at 0.5)."""
    fill = {tv_tensors.Image: tuple(mean), tv_tensors.Mask: IGNORE_INDEX}  # padding never becomes a class
    probs = dict(rotate_prob=rotate_prob, blur_prob=blur_prob, flip_prob=flip_prob)
    steps: list[Any] = [ScaleRotateBlurFlipCrop(crop_size, scale_range, rotate_range, **probs, fill=fill)]
    if photometric:
        steps.append(v2.RandomPhotometricDistort(p=0.5))
    steps.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(steps)


def eval_transforms(*, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> v2.Compose:
    """Evaluation: the image at its own size, normalized; the mask untouched."""
    # uint8 -> float in [0, 1] for the image only; the mask stays uint8 class ids.
    return v2.Compose(
        [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.Normalize(list(mean), list(std))]
    )
