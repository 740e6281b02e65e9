"""Concurrent spatial and channel squeeze-and-excitation (scSE).

Paper: Roy, Navab, Wachinger, "Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully
Convolutional Networks", MICCAI 2018, https://arxiv.org/abs/1803.02579.
Choices: the cSE branch has a ReLU between its two bias-free 1x1 convs, as in the paper (the survey
drops it, which collapses the two convs into one low-rank linear map). The branches are fused by
addition, the paper's (conference version) choice. PyTorch's default initialisation.
"""

from __future__ import annotations

import torch
from torch import nn


class SCSE(nn.Module):
    """Sum of a channel gate (cSE) and a spatial gate (sSE) applied to the same input.

    ``y = x * g_c + x * q`` with ``g_c = sigmoid(expand(relu(reduce(mean_hw(x)))))`` of shape
    (B, C, 1, 1) and ``q = sigmoid(conv1x1(x))`` of shape (B, 1, H, W), so ``y / x`` lies in (0, 2).
    """

    def __init__(self, in_channels: int, *, reduction: int = 2) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1 (hidden width C // reduction; paper: 2), got {reduction}")
        self.out_channels = in_channels
        hidden = max(1, in_channels // reduction)
        self.cse_reduce = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.cse_expand = nn.Conv2d(hidden, in_channels, 1, bias=False)
        self.sse = nn.Conv2d(in_channels, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeeze = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        channel_gate = torch.sigmoid(self.cse_expand(torch.relu(self.cse_reduce(squeeze))))  # (B, C, 1, 1)
        spatial_gate = torch.sigmoid(self.sse(x))  # (B, 1, H, W)
        return x * channel_gate + x * spatial_gate
