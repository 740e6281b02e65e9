"""Depthwise-separable convolution: a depthwise k x k conv followed by a pointwise 1 x 1 conv.

Papers: Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications", arXiv 2017, https://arxiv.org/abs/1704.04861; Chollet, "Xception: Deep Learning with
Depthwise Separable Convolutions", CVPR 2017, https://arxiv.org/abs/1610.02357.

With ``norm_layer`` it is the MobileNet form (norm + ReLU between the two convs, the depthwise conv
then bias-free since the norm's shift replaces its bias); without, the Xception / survey form
(nothing between). Unlike the survey's listing, kernel size, stride and dilation are configurable
(padding ``dilation * (k // 2)``). The norm after the pointwise conv belongs to the host block.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class DepthwiseSeparableConv(nn.Module):
    """``pointwise(act(norm(depthwise(x))))``: a k x k conv factorised into spatial and channel mixing.

    Costs ``k^2 C_in + C_in C_out`` weights instead of ``k^2 C_in C_out``; without a norm it equals
    the dense conv with the rank-1-per-tap kernel ``W[o, c] = P[o, c] D[c]``.
    """

    normalizes_output = False
    DENSE_ALIASES: dict[str, str] = {}  # no dense k x k kernel inside

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = True,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd so the output keeps the conv size, got {kernel_size}")
        self.out_channels = out_channels
        self.depthwise = nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size,
            stride,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            groups=in_channels,
            bias=bias and norm_layer is None,
        )
        self.norm = norm_layer(in_channels) if norm_layer is not None else nn.Identity()
        self.act = nn.ReLU(inplace=True) if norm_layer is not None else nn.Identity()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torchvision MobileNet: He-normal (fan_out) weights, zero biases, norms 1 / 0.
        for conv in (self.depthwise, self.pointwise):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        if getattr(self.norm, "weight", None) is not None:
            nn.init.ones_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.act(self.norm(self.depthwise(x))))  # (N, C_out, H', W')
