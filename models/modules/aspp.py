"""Atrous Spatial Pyramid Pooling (ASPP), DeepLabV3 form: BN in every branch plus image pooling.

Paper: Chen, Papandreou, Schroff, Adam, "Rethinking Atrous Convolution for Semantic Image Segmentation"
(DeepLabV3), arXiv 2017, https://arxiv.org/abs/1706.05587. ASPP first appeared in DeepLab v2
(https://arxiv.org/abs/1606.00915); the survey links DeepLabv3+ (https://arxiv.org/abs/1802.02611).

Choices: the paper's module, not the document's single separable branch. Rates (12, 24, 36) are the
output-stride-8 rates; a dilation of 1 denotes the 1x1 branch (mmseg convention). No dropout inside:
DeepLab drops after the projection, which is where the head applies its own dropout. PyTorch's default
initialisation, as torchvision's DeepLabV3 head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation


class ASPP(nn.Module):
    """Parallel atrous convs at several rates plus a global-average branch, concatenated and projected.

    Each branch is conv (bias-free) + norm + ReLU with ``out_channels`` channels. The image-pooling
    branch normalises a 1x1 map, so in train mode it needs batch >= 2 (2 values per channel).
    ``out_channels=None`` means 256; ``norm_layer=None`` gives plain convs with biases + ReLU.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = 256,
        *,
        dilations: Sequence[int] = (1, 12, 24, 36),
        image_pooling: bool = True,
        norm_layer: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        out_channels = 256 if out_channels is None else out_channels
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1 (or null for 256), got {out_channels}")
        self.dilations = tuple(dilations)
        if not self.dilations or any(not isinstance(d, int) or d < 1 for d in self.dilations):
            raise ValueError(
                f"dilations must be a non-empty sequence of ints >= 1 (1 = the 1x1 branch), got {dilations!r}"
            )
        self.out_channels = out_channels

        def conv_bn_relu(cin: int, kernel_size: int, dilation: int = 1) -> Conv2dNormActivation:
            padding = dilation * (kernel_size // 2)
            return Conv2dNormActivation(
                cin, out_channels, kernel_size, padding=padding, dilation=dilation, norm_layer=norm_layer
            )  # activation: ReLU (the default)

        self.branches = nn.ModuleList(
            conv_bn_relu(in_channels, 1) if d == 1 else conv_bn_relu(in_channels, 3, d) for d in self.dilations
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(in_channels, 1)) if image_pooling else None
        num_branches = len(self.branches) + (1 if image_pooling else 0)
        self.project = conv_bn_relu(num_branches * out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        features = [branch(x) for branch in self.branches]  # each (N, out, H, W)
        if self.pool is not None:
            # Bilinear upsampling (align_corners=True) of a 1x1 map is a broadcast: expand, no copy.
            features.append(self.pool(x).expand(-1, -1, h, w))  # (N, out, 1, 1) -> (N, out, H, W)
        return self.project(torch.cat(features, dim=1))  # (N, branches * out, H, W) -> (N, out, H, W)
