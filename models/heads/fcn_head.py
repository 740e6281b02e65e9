"""FCN head: the auxiliary head of SPNet (on stage 3) and the "Base FCN" of the paper's ablations.

Paper: Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015, https://arxiv.org/abs/1411.4038 (the 3x3-conv form of PyTorch-Encoding / SPNet).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation


class FCNHead(nn.Module):
    """3x3 conv (C -> C/4) + norm + ReLU, Dropout2d, 1x1 classifier. Logits at feature resolution."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        channels: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        channels = channels or in_channels // 4
        self.conv = Conv2dNormActivation(in_channels, channels, 3, norm_layer=norm_layer)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))
