"""SP head: the SPNet decoder, two mixed pooling modules between a reduction and a classifier.

Paper: Hou, Zhang, Cheng, Feng, "Strip Pooling: Rethinking Spatial Pooling for Scene Parsing",
CVPR 2020, https://arxiv.org/abs/2003.13328.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

from ..modules import MixedPooling


class SPNetHead(nn.Module):
    """1x1 conv (C -> C/2), ``num_mpm`` MPMs, 3x3 conv (-> C/4), Dropout2d, 1x1 classifier.

    ``num_mpm=0`` gives the head without context modules; the paper's ablation rows use 1 and 2.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        channels: int | None = None,
        num_mpm: int = 2,
        pool_sizes: Sequence[int] = (20, 12),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        channels = channels or in_channels // 2
        self.reduce = Conv2dNormActivation(in_channels, channels, 1, norm_layer=norm_layer)
        self.context = nn.Sequential(
            *(MixedPooling(channels, norm_layer=norm_layer, pool_sizes=pool_sizes) for _ in range(num_mpm))
        )
        self.bottleneck = Conv2dNormActivation(channels, channels // 2, 3, norm_layer=norm_layer)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels // 2, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.context(self.reduce(x))  # (B, C/2, H, W)
        return self.classifier(self.dropout(self.bottleneck(x)))
