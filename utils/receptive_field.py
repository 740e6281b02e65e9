"""Effective receptive fields: which input pixels an output pixel's logits actually depend on.

Luo, Li, Urtasun, Zemel, "Understanding the Effective Receptive Field in Deep Convolutional Neural
Networks", NeurIPS 2016: put a gradient of 1 on every output channel at the centre output pixel
(``pixel``), or on the whole centre row (``row``) or column (``column``), 0 elsewhere; backpropagate to
the input; take |gradient| summed over the input channels, average it over images and normalise the
map to sum 1. The theoretical receptive field says what *can* reach an output; this map says how much
each input pixel does.

The model runs in eval mode, so BatchNorm uses its running statistics (at initialisation mean 0 and
variance 1, i.e. nearly the identity) and the images of a batch do not see each other. Parameters get
no gradients and nothing draws from the global random generator, so measuring leaves a run's random
stream as it was, and measuring twice gives the same map.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

MODES = ("pixel", "row", "column")


def output_mask(height: int, width: int, mode: str) -> torch.Tensor:
    """(H, W) 0/1 map of the output pixels the gradient starts from: the centre pixel, row or column."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    mask = torch.zeros(height, width)
    cy, cx = height // 2, width // 2
    if mode == "pixel":
        mask[cy, cx] = 1
    elif mode == "row":
        mask[cy, :] = 1
    else:
        mask[:, cx] = 1
    return mask


def effective_receptive_field(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    mode: str = "pixel",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The (H, W) float64 effective receptive field of ``model`` over the image ``batches`` ([B, 3, H, W]).

    ``model`` maps images to logits [B, K, H', W'] or to a dict with ``"out"``; the gradient starts at
    the centre of its output, which need not have the input's size. ``dtype`` (e.g. ``torch.float64``
    for exact tests) converts the model and the images; the model is left in eval mode, its
    parameters' ``requires_grad`` as they were.
    """
    model.eval()
    if dtype is not None:
        model.to(dtype)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    total, count = None, 0
    try:
        for images in batches:
            image = images.detach().to(dtype or images.dtype).requires_grad_(True)
            out = model(image)
            out = out["out"] if isinstance(out, dict) else out
            mask = output_mask(out.shape[-2], out.shape[-1], mode).to(out)
            (out * mask).sum().backward()
            grad = image.grad.abs().sum(dim=1).double()  # (B, H, W)
            total = grad.sum(0) if total is None else total + grad.sum(0)
            count += grad.shape[0]
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    if total is None:
        raise ValueError("no images to take the receptive field over")
    erf = total / count
    mass = erf.sum()
    if mass <= 0:
        raise ValueError("the gradient at the input is zero everywhere: the output does not depend on the input")
    return erf / mass


def area_holding(erf: torch.Tensor, fraction: float) -> int:
    """The smallest number of pixels whose mass adds up to ``fraction`` of the (normalised) map."""
    values = erf.flatten().double().sort(descending=True).values
    cumulative = values.cumsum(0)
    # a relative tolerance, so a map whose first pixels hold exactly 50% is not pushed one pixel on by rounding
    return int((cumulative < fraction * cumulative[-1] * (1 - 1e-9)).sum()) + 1


def region_holding(erf: torch.Tensor, fraction: float) -> torch.Tensor:
    """(H, W) bool: the pixels at least as heavy as the lightest of the ``area_holding`` pixels.

    Ties are all kept, so the region (and its bounding box) does not depend on the order of a sort.
    """
    n = area_holding(erf, fraction)
    threshold = erf.flatten().sort(descending=True).values[n - 1]
    return erf >= threshold


def statistics(erf: torch.Tensor) -> dict[str, Any]:
    """Sizes of an (H, W) map normalised to sum 1 (``effective_receptive_field``).

    ``area50`` / ``area95``: the fewest pixels holding 50% / 95% of the mass, and the same as a
    fraction of the image (``area50_fraction``, ``area95_fraction``). ``height95`` / ``width95``:
    the bounding box of the 95% region (``region_holding``). ``std_y`` / ``std_x``: the standard
    deviation, in pixels, of the whole map's mass along y (rows) and x (columns); ``anisotropy``
    = std_y / std_x, above 1 for a tall field (NaN where std_x is 0).
    """
    erf = erf.double() / erf.sum()
    height, width = erf.shape
    region = region_holding(erf, 0.95)
    rows = region.any(dim=1).nonzero().flatten()
    cols = region.any(dim=0).nonzero().flatten()
    std_y = _std(erf.sum(dim=1))
    std_x = _std(erf.sum(dim=0))
    area50, area95 = area_holding(erf, 0.5), area_holding(erf, 0.95)
    return {
        "size": [height, width],
        "area50": area50,
        "area50_fraction": area50 / (height * width),
        "area95": area95,
        "area95_fraction": area95 / (height * width),
        "height95": int(rows[-1] - rows[0] + 1),
        "width95": int(cols[-1] - cols[0] + 1),
        "std_y": std_y,
        "std_x": std_x,
        "anisotropy": std_y / std_x if std_x > 0 else math.nan,
    }


def _std(marginal: torch.Tensor) -> float:
    """Standard deviation of the position under a 1-D distribution of mass (summing to 1); below a
    millionth of a pixel it is rounding (the mean of one column lands at 2 + 4e-16) and reads 0."""
    position = torch.arange(len(marginal), dtype=torch.float64)
    mean = (marginal * position).sum()
    std = float(((marginal * (position - mean) ** 2).sum()).sqrt())
    return std if std > 1e-6 else 0.0
