"""Squeeze-and-Excitation (SE) channel attention.

Paper: Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018, https://arxiv.org/abs/1709.01507.
Choices: the two FC layers are 1x1 convs with biases, as in the paper (the common PyTorch port and the
survey use bias-free Linear layers). The paper prescribes no initialisation; PyTorch's default is used.
"""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcitation(nn.Module):
    """Reweights channels by a gate computed from their global averages.

    ``y = x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`` with hidden width ``max(1, C // reduction)``.
    The gate sees only global statistics, so it adds no spatial context and commutes with any
    spatial permutation of ``x``.
    """

    def __init__(self, in_channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1 (hidden width C // reduction; paper: 16), got {reduction}")
        self.out_channels = in_channels
        hidden = max(1, in_channels // reduction)
        self.fc1 = nn.Conv2d(in_channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeeze = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(squeeze))))  # (B, C, 1, 1)
        return x * gate
