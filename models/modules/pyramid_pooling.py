"""Pyramid Pooling Module (PPM) of PSPNet, in the PyTorch-Encoding / SPNet code form (C -> 2C).

Paper: Zhao, Shi, Qi, Wang, Jia, "Pyramid Scene Parsing Network", CVPR 2017, https://arxiv.org/abs/1612.01105.

Choices: adaptive average pooling (the paper pooled a fixed 60x60 map with fixed kernels) and no
bottleneck conv: the output is the concatenation [x, level_1, ..., level_k], and the head's own conv
fuses it, as in the SPNet/EncNet code. PyTorch's default initialisation, as that code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import Conv2dNormActivation

from .adaptive_pool import adaptive_avg_pool2d


class PyramidPooling(nn.Module):
    """Appends to x one context map per bin: average pool to bin x bin, 1x1 conv + norm + ReLU, upsample.

    The 1x1 bin is global context; finer bins keep coarse layout. ``out_channels = C + len(bins) * Ci``
    with ``Ci = max(1, C // reduction)``, i.e. 2C for the defaults. On maps smaller than a bin the
    adaptive pool replicates values, which is harmless. ``norm_layer=None`` gives biased convs + ReLU.
    ``exportable_pool`` switches the pooling to its export form (``adaptive_pool.py``).
    """

    exportable_pool: bool = False

    def __init__(
        self,
        in_channels: int,
        *,
        bins: Sequence[int] = (1, 2, 3, 6),
        reduction: int = 4,
        norm_layer: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"reduction must be an int >= 1 (level width is C // reduction), got {reduction!r}")
        self.bins = tuple(bins)
        if not self.bins or any(not isinstance(b, int) or b < 1 for b in self.bins):
            raise ValueError(f"bins must be a non-empty sequence of ints >= 1 (pooled grid sizes), got {bins!r}")
        inner = max(1, in_channels // reduction)
        self.out_channels = in_channels + len(self.bins) * inner
        self.levels = nn.ModuleList(
            Conv2dNormActivation(in_channels, inner, 1, norm_layer=norm_layer, activation_layer=nn.ReLU)
            for _ in self.bins
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = [x]
        for size, level in zip(self.bins, self.levels):
            pooled = level(adaptive_avg_pool2d(x, size, self.exportable_pool))  # (N, Ci, bin, bin)
            out.append(F.interpolate(pooled, (h, w), mode="bilinear", align_corners=True))  # (N, Ci, H, W)
        return torch.cat(out, dim=1)  # (N, C + len(bins) * Ci, H, W)
