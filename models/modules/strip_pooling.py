"""Strip Pooling Module (SPM), the block attention of SPNet.

Paper: Hou, Zhang, Cheng, Feng, "Strip Pooling: Rethinking Spatial Pooling for Scene Parsing",
CVPR 2020, https://arxiv.org/abs/2003.13328. The official code calls this module ``SPBlock``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .strip_conv import StripConv
from .strips import broadcast_strips, pool_strips


class StripPooling(nn.Module):
    """Gates features with two long, thin pooling windows: one row-strip, one column-strip.

    ``y = x * sigmoid(fuse(relu(expand(bn_h(conv_h(mean_W(x)))) + expand(bn_w(conv_w(mean_H(x)))))))``

    Every output position sees the whole row and the whole column it lies on, which is what lets
    thin, long objects (poles, fences, lanes) be recognised from their full extent.

    Broadcasting the pooled strips back to H x W uses ``expand`` (a view, no copy): it equals
    bilinear interpolation with ``align_corners=True`` exactly (tested), and costs nothing.
    ``fast_pool`` (``train.fast.strip_pool`` / ``eval.fast.strip_pool``) pools and broadcasts with
    NHWC kernels on channels_last CPU maps (``strips.py``).
    """

    fast_pool: bool = True

    def __init__(
        self,
        in_channels: int,
        *,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.out_channels = in_channels
        # (3, 1) conv along H on the width-pooled (C, H, 1) strip; (1, 3) conv along W on (C, 1, W).
        self.conv_h = StripConv(in_channels, in_channels, (3, 1), padding=(1, 0), bias=False)
        self.bn_h = norm_layer(in_channels)
        self.conv_w = nn.Conv2d(in_channels, in_channels, (1, 3), padding=(0, 1), bias=False)
        self.bn_w = norm_layer(in_channels)
        self.fuse = nn.Conv2d(in_channels, in_channels, 1, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The official SPM lives inside the ResNet and gets the ResNet's initialisation:
        # He-normal (fan_out) conv weights, norm weight 1 / bias 0, PyTorch's default for fuse.bias.
        for conv in (self.conv_h, self.conv_w, self.fuse):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        for norm in (self.bn_h, self.bn_w):
            if getattr(norm, "weight", None) is not None:
                nn.init.ones_(norm.weight)
                nn.init.zeros_(norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled_h, pooled_w = pool_strips(x, self.fast_pool)  # (B, C, H, 1), (B, C, 1, W)
        strip_h = self.bn_h(self.conv_h(pooled_h))
        strip_w = self.bn_w(self.conv_w(pooled_w))
        context = torch.relu(broadcast_strips(strip_h, strip_w, x, self.fast_pool))
        return x * torch.sigmoid(self.fuse(context))  # (B, C, H, W)
