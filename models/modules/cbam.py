"""Convolutional Block Attention Module (CBAM): a channel gate, then a spatial gate.

Paper: Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018,
https://arxiv.org/abs/1807.06521.
Choices: the paper's form. The shared MLP is bias-free; the spatial conv sees [mean_c, max_c] and has
no norm after it. The official code instead orders the pooled maps [max, mean], adds a BatchNorm after
the k x k conv and uses biased Linear layers; that matters only for loading official weights. The
official code starts that BatchNorm at weight 0, so its spatial gate is a uniform 0.5 at init; we get
the same start by zero-initialising the spatial conv. Default reduction 16 as in the paper (the survey
uses 4).
"""

from __future__ import annotations

import torch
from torch import nn


class _ChannelGate(nn.Module):
    """``sigmoid(mlp(GAP(x)) + mlp(GMP(x)))``, shape (B, C, 1, 1); blind to spatial order."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        max_ = x.amax(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        return torch.sigmoid(self.mlp(avg) + self.mlp(max_))


class _SpatialGate(nn.Module):
    """``sigmoid(conv_kxk([mean_c(x), max_c(x)]))``, shape (B, 1, H, W); blind to channel order."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (B, 2, H, W)
        return torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Sequential channel then spatial attention: ``x' = x * Mc(x)``, ``y = x' * Ms(x')``.

    Both gates lie in (0, 1), so ``y / x`` does too. The spatial conv is padded by ``k // 2``
    (odd ``k``), so 1x1 maps stay 1x1.
    """

    def __init__(self, in_channels: int, *, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1 (hidden width C // reduction; paper: 16), got {reduction}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd so the map keeps its size (paper: 7 or 3), got {kernel_size}")
        self.out_channels = in_channels
        self.channel_gate = _ChannelGate(in_channels, max(1, in_channels // reduction))
        self.spatial_gate = _SpatialGate(kernel_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.channel_gate.mlp:
            if isinstance(layer, nn.Conv2d):
                layer.reset_parameters()
        # Uniform 0.5 spatial gate at init, the official code's start (its BN weight is zeroed there).
        nn.init.zeros_(self.spatial_gate.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_gate(x)  # (B, C, H, W) * (B, C, 1, 1)
        return x * self.spatial_gate(x)  # (B, C, H, W) * (B, 1, H, W)
