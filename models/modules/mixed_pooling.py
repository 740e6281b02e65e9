"""Mixed Pooling Module (MPM), the context module of the SPNet head.

Paper: Hou, Zhang, Cheng, Feng, "Strip Pooling: Rethinking Spatial Pooling for Scene Parsing",
CVPR 2020, https://arxiv.org/abs/2003.13328. The official code calls this module
``StripPooling``, a confusing name since it is the *mixed* module; our ``StripPooling`` is the SPM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import Conv2dNormActivation

from .adaptive_pool import adaptive_avg_pool2d
from .strip_conv import StripConv
from .strips import broadcast_strips, pool_strips


class MixedPooling(nn.Module):
    """Short-range (square pooling grids) and long-range (strip pooling) context, fused residually.

    With C input channels and Ci = C // 4:

    - short-range: 3x3 conv on the full-resolution features plus one 3x3 conv per square pooling
      grid (20x20 and 12x12 in SPNet), upsampled bilinearly; ReLU of the sum; 3x3 conv.
    - long-range: (1, 3) conv on the height-pooled (1 x W) strip and (3, 1) conv on the
      width-pooled (H x 1) strip, broadcast back to H x W; ReLU of the sum; 3x3 conv.
    - ``y = relu(x + norm(conv1x1(cat[short, long])))``.

    ``fast_pool`` switches the strip pooling's fast path for channels_last CPU maps (``strips.py``);
    ``exportable_pool`` the square grids' pooling to its export form (``adaptive_pool.py``).
    """

    fast_pool: bool = True
    exportable_pool: bool = False

    def __init__(
        self,
        in_channels: int,
        *,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        pool_sizes: Sequence[int] = (20, 12),
    ) -> None:
        super().__init__()
        if in_channels < 4:
            raise ValueError(
                f"in_channels must be >= 4 (the inner width is C // 4), got {in_channels}; "
                "give the head a wider reduce_channels"
            )
        self.out_channels = in_channels
        self.pool_sizes = tuple(int(s) for s in pool_sizes)
        inner = in_channels // 4

        def conv_bn(kernel_size: int | tuple[int, int], cin: int = inner, relu: bool = False) -> nn.Sequential:
            return Conv2dNormActivation(
                cin, inner, kernel_size, norm_layer=norm_layer, activation_layer=nn.ReLU if relu else None
            )

        self.reduce_short = conv_bn(1, cin=in_channels, relu=True)
        self.reduce_long = conv_bn(1, cin=in_channels, relu=True)
        self.short_local = conv_bn(3)
        self.short_pools = nn.ModuleList(conv_bn(3) for _ in self.pool_sizes)
        self.long_w = conv_bn((1, 3))  # on the (1 x W) strip, mixes neighbouring columns
        # on the (H x 1) strip, mixes neighbouring rows; laid out as conv_bn's (0: conv, 1: norm)
        self.long_h = nn.Sequential(StripConv(inner, inner, (3, 1), padding=(1, 0), bias=False), norm_layer(inner))
        self.fuse_short = conv_bn(3, relu=True)
        self.fuse_long = conv_bn(3, relu=True)
        self.project = Conv2dNormActivation(2 * inner, in_channels, 1, norm_layer=norm_layer, activation_layer=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        a = self.reduce_short(x)  # (B, Ci, H, W)
        b = self.reduce_long(x)  # (B, Ci, H, W)

        short = self.short_local(a)
        for size, conv in zip(self.pool_sizes, self.short_pools):
            pooled = conv(adaptive_avg_pool2d(a, size, self.exportable_pool))  # (B, Ci, size, size)
            short = short + F.interpolate(pooled, (h, w), mode="bilinear", align_corners=True)
        short = self.fuse_short(torch.relu(short))

        pooled_h, pooled_w = pool_strips(b, self.fast_pool)  # (B, Ci, H, 1), (B, Ci, 1, W)
        strip_h, strip_w = self.long_h(pooled_h), self.long_w(pooled_w)
        long = self.fuse_long(torch.relu(broadcast_strips(strip_h, strip_w, b, self.fast_pool)))

        return torch.relu(x + self.project(torch.cat([short, long], dim=1)))
