"""SPP block of YOLOv3-SPP: stride-1 max-pools of several sizes, concatenated with the input.

Source: no paper; the darknet config ``yolov3-spp.cfg`` (https://github.com/AlexeyAB/darknet,
https://pjreddie.com/darknet). The name comes from SPP-Net (He et al., https://arxiv.org/abs/1406.4729),
which pools into fixed bins, a different operation.

Choices: channel order follows the cfg's route layer, largest window first and the input last
([mp13, mp9, mp5, x] for the defaults), so converted darknet weights of the next conv line up.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SPP(nn.Module):
    """Parameter-free multi-scale context: ``cat[maxpool_k(x) for k largest first] + [x]``.

    Pools have stride 1 and padding k // 2 (padded with -inf), so the size is kept, 1x1 maps included.
    Since mp9 == mp5(mp5) and mp13 == mp5(mp5(mp5)), the "SPPF" cascade is the same function, bit for
    bit: when the kernels form such a chain (each one ``k0 - 1`` larger than the last), it is what
    runs, 3x faster on a CPU for the default (5, 9, 13) on 512 x 97 x 97 (tested equal).
    """

    def __init__(self, in_channels: int, *, kernel_sizes: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        if not kernel_sizes or any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(
                f"kernel_sizes must be odd ints >= 1 so padding k // 2 keeps the size, got {kernel_sizes!r}"
            )
        self.kernel_sizes = tuple(sorted(kernel_sizes, reverse=True))  # the output (route) order
        self.out_channels = (len(self.kernel_sizes) + 1) * in_channels
        ascending, k0 = self.kernel_sizes[::-1], self.kernel_sizes[-1]
        self.cascade = all(b - a == k0 - 1 for a, b in zip(ascending, ascending[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cascade:  # mp5, mp5(mp5), mp5(mp5(mp5)): the same maxima over nested windows
            k0, pooled, y = self.kernel_sizes[-1], [], x
            for _ in self.kernel_sizes:
                y = F.max_pool2d(y, k0, stride=1, padding=k0 // 2)
                pooled.insert(0, y)  # largest window first
        else:
            pooled = [F.max_pool2d(x, k, stride=1, padding=k // 2) for k in self.kernel_sizes]  # each (N, C, H, W)
        return torch.cat([*pooled, x], dim=1)  # (N, (len(kernel_sizes) + 1) * C, H, W)
