"""Split-Attention convolution, the 3x3-conv replacement of ResNeSt.

Paper: Zhang, Wu, Zhang, Zhu, Lin, Zhang, Sun, He, Mueller, Manmatha, Li, Smola, "ResNeSt:
Split-Attention Networks", arXiv 2020 (CVPR Workshops 2022), https://arxiv.org/abs/2004.08955.

Follows the official ``SplAtConv2d`` (github.com/zhanghang1989/ResNeSt) as ResNeSt builds it, with
a norm (the survey's listing defaults to none) and a bias-free grouped conv: its channel layout, the
attention width ``max(in_channels * radix // reduction, min_channels)`` and the r-softmax. The
survey's transcription defects (the radix sum overwritten by ``att * x``, sigmoid after softmax) are
fixed. DropBlock and the rectified conv (``rectify``) of the official code are left out.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class SplitAttentionConv(nn.Module):
    """A grouped conv producing ``radix`` feature splits, fused by a softmax attention over the splits.

    Channel layout (official): the conv has ``groups * radix`` groups, so chunk r of its output
    (channels ``[r*C, (r+1)*C)``) holds split r of every cardinal group, and cardinal group k is the
    slice ``[k*C/K, (k+1)*C/K)`` inside each chunk. The attention FCs are grouped by cardinal group,
    so each cardinal group chooses among its own splits only.
    """

    normalizes_output = True
    DENSE_ALIASES: dict[str, str] = {}  # the conv has out_channels * radix outputs: no dense 3x3 fits

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        radix: int = 2,
        reduction: int = 4,
        min_channels: int = 32,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if radix < 1 or reduction < 1 or min_channels < 1:
            raise ValueError(
                f"radix, reduction and min_channels must be >= 1, got {radix}, {reduction}, {min_channels}"
            )
        inter = max(in_channels * radix // reduction, min_channels)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd so the output keeps the conv size, got {kernel_size}")
        if in_channels % (groups * radix) or out_channels % groups or inter % groups:
            raise ValueError(
                f"groups * radix = {groups * radix} must divide in_channels={in_channels}, and groups={groups} must "
                f"divide out_channels={out_channels} and the attention width {inter}; change groups or radix"
            )
        self.out_channels = out_channels
        self.radix = radix
        self.groups = groups
        self.conv = nn.Conv2d(
            in_channels,
            out_channels * radix,
            kernel_size,
            stride,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            groups=groups * radix,
            bias=False,
        )
        self.norm = norm_layer(out_channels * radix)
        self.act = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(out_channels, inter, 1, groups=groups)
        self.norm1 = norm_layer(inter)
        self.fc2 = nn.Conv2d(inter, out_channels * radix, 1, groups=groups)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Official ResNeSt: conv weights normal(0, sqrt(2 / fan_out)), norms 1 / 0, conv biases left default.
        for conv in (self.conv, self.fc1, self.fc2):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        for norm in (self.norm, self.norm1):
            if getattr(norm, "weight", None) is not None:
                nn.init.ones_(norm.weight)
                nn.init.zeros_(norm.bias)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """The radix splits ``relu(norm(conv(x)))`` as (N, R, C, H', W'); split r is chunk r."""
        u = self.act(self.norm(self.conv(x)))  # (N, R*C, H', W')
        n, _, h, w = u.shape
        return u.view(n, self.radix, self.out_channels, h, w)  # (N, R, C, H', W')

    def attention(self, u: torch.Tensor) -> torch.Tensor:
        """Split weights (N, R, C, 1, 1): a softmax over R (summing to 1) if radix > 1, else a sigmoid gate."""
        n = u.shape[0]
        gap = u.sum(dim=1).mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
        logits = self.fc2(torch.relu(self.norm1(self.fc1(gap))))  # (N, R*C, 1, 1), cardinal-group major
        if self.radix == 1:
            return torch.sigmoid(logits).view(n, 1, self.out_channels, 1, 1)
        logits = logits.view(n, self.groups, self.radix, -1).transpose(1, 2)  # (N, R, K, C/K)
        return logits.softmax(dim=1).reshape(n, self.radix, self.out_channels, 1, 1)  # (N, R, C, 1, 1), chunk order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.split(x)  # (N, R, C, H', W')
        return (self.attention(u) * u).sum(dim=1)  # (N, C, H', W')
