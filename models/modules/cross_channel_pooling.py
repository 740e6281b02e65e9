"""Cross-channel pooling: a parameter-free channel reduction by max (maxout) or mean over channel groups.

Source: a blog ("cross channel pooling 的原理与代码实现") that names no paper. Its max variant is Maxout:
Goodfellow, Warde-Farley, Mirza, Courville, Bengio, "Maxout Networks", ICML 2013,
https://arxiv.org/abs/1302.4389. Network in Network (https://arxiv.org/abs/1312.4400) calls its learnable
1x1 conv "cross channel parametric pooling", the counterpart this module contrasts with.

Choices: groups are consecutive channels (``[j k, (j + 1) k)``), reduced with a reshape rather than the blog's
transpose + max-pool. Unlike the blog, the channel count must divide evenly (it silently dropped trailing
channels) and groups never overlap (it allowed stride != kernel). With ties, ``amax`` splits the gradient
evenly between the tied channels.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class CrossChannelPool(nn.Module):
    """``y[:, j] = max (or mean) of x[:, j k : (j + 1) k]`` at every pixel, with ``k = in / out``."""

    def __init__(self, in_channels: int, out_channels: int, *, mode: Literal["max", "avg"] = "max") -> None:
        super().__init__()
        if in_channels % out_channels:
            raise ValueError(
                f"CrossChannelPool needs in_channels ({in_channels}) to be a multiple of out_channels "
                f"({out_channels}); pick a width (the head's reduce_channels) that divides {in_channels}"
            )
        self.out_channels = out_channels
        self.group_size = in_channels // out_channels
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        groups = x.reshape(n, self.out_channels, self.group_size, h, w)  # (B, C/k, k, H, W)
        return groups.amax(dim=2) if self.mode == "max" else groups.mean(dim=2)  # (B, C/k, H, W)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, mode={self.mode!r}"
