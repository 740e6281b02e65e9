"""MixConv: a depthwise conv whose channel groups use different kernel sizes.

Paper: Tan, Le, "MixConv: Mixed Depthwise Convolutional Kernels", BMVC 2019,
https://arxiv.org/abs/1907.09595.

Follows the paper, not the survey's listing (Ultralytics ``MixConv2d``): each channel group gets a
*depthwise* conv, so channels are unchanged and output group g depends only on input group g; the
survey's branches are full convs over all inputs. Padding is ``dilation * (k - 1) // 2`` (the
survey's ``k // 2`` ignores dilation). Channels are split as evenly as possible, first groups first
(64 -> 22, 21, 21); the official MixNet code gives the whole remainder to the first group, which
differs only when ``C % len(kernel_sizes) >= 2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MixConv(nn.Module):
    """Depthwise conv with kernel ``kernel_sizes[i]`` on channel group i; groups concatenated.

    Mixing small and large kernels in one layer gives several receptive fields at the cost of a
    depthwise conv. No norm and no bias: the host block's norm follows. ``out_channels`` is there for
    the block-conv signature: a depthwise conv keeps ``in_channels`` (the blocks pass the same width).
    """

    normalizes_output = False
    DENSE_ALIASES: dict[str, str] = {}  # depthwise kernels: no dense 3x3 fits

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        kernel_sizes: Sequence[int] = (3, 5, 7),
        stride: int = 1,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be a non-empty list of odd sizes (e.g. [3, 5, 7]), got {kernel_sizes}")
        if len(kernel_sizes) > in_channels:
            raise ValueError(
                f"kernel_sizes {list(kernel_sizes)} splits the channels into {len(kernel_sizes)} groups, but this conv "
                f"has only {in_channels} channels; give at most {in_channels} kernel sizes"
            )
        self.out_channels = in_channels
        self.kernel_sizes = kernel_sizes
        g = len(kernel_sizes)
        self.splits = tuple(in_channels // g + (i < in_channels % g) for i in range(g))
        self.convs = nn.ModuleList(
            nn.Conv2d(c, c, k, stride, padding=dilation * (k - 1) // 2, dilation=dilation, groups=c, bias=False)
            for c, k in zip(self.splits, kernel_sizes)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # MixNet (as EfficientNet, torchvision MobileNet): He-normal with fan_out.
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.splits, dim=1)  # g tensors of (N, C_i, H, W)
        return torch.cat([conv(p) for conv, p in zip(self.convs, parts)], dim=1)  # (N, C, H', W')
