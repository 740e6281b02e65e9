"""Selective-kernel convolution (SK conv), the 3x3-conv replacement of SKNet.

Paper: Li, Wang, Hu, Yang, "Selective Kernel Networks", CVPR 2019, https://arxiv.org/abs/1903.06586.

Follows the paper, not the survey's listing: branch m is a 3x3 conv with dilation (m+1)*dilation
(the paper's cheap 5x5, 7x7 receptive fields) instead of a dense (3+2m)x(3+2m) kernel; the branch
convs are bias-free; the fuse layer is conv -> norm -> ReLU; the select layer is bias-free (the
paper's Eq. 5, ``a_c = exp(A_c z) / sum_m exp(M_c z)``). SKNet-50 uses groups=32 on a ResNeXt; our
default groups=1 keeps branch 0 the shape of a dense ResNet 3x3 conv, so ImageNet ResNet weights can
initialise it (``DENSE_ALIASES``). ``out_channels`` may differ from ``in_channels`` (the paper has
them equal); the branches then map in -> out and everything after them works on out channels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn


class SelectiveKernelConv(nn.Module):
    """Dilated 3x3 branches mixed per channel by a softmax over branches (split, fuse, select).

    ``U_m = relu(norm(conv3x3_dil(m+1)d(x)))``, ``z = relu(norm(W gap(sum_m U_m)))``,
    ``a = softmax_m(A_m z)``, ``V = sum_m a_m * U_m``. Each channel picks its receptive field
    from the content of the whole image, which is what makes it a "selective kernel".
    """

    normalizes_output = True
    DENSE_ALIASES = {"conv": "branches.0.conv", "norm": "branches.0.norm"}

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        stride: int = 1,
        dilation: int = 1,
        num_branches: int = 2,
        groups: int = 1,
        reduction: int = 16,
        min_channels: int = 32,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if num_branches < 1:
            raise ValueError(f"num_branches must be >= 1, got {num_branches}")
        if reduction < 1 or min_channels < 1:
            raise ValueError(f"reduction and min_channels must be >= 1, got {reduction} and {min_channels}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}; "
                "pick groups that divides both"
            )
        self.out_channels = out_channels
        self.num_branches = num_branches
        hidden = max(out_channels // reduction, min_channels)

        def branch(d: int) -> nn.Sequential:
            conv = nn.Conv2d(in_channels, out_channels, 3, stride, padding=d, dilation=d, groups=groups, bias=False)
            return nn.Sequential(OrderedDict(conv=conv, norm=norm_layer(out_channels), act=nn.ReLU(inplace=True)))

        self.branches = nn.ModuleList(branch((m + 1) * dilation) for m in range(num_branches))
        self.fuse = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(out_channels, hidden, 1, bias=False),
                norm=norm_layer(hidden),
                act=nn.ReLU(inplace=True),
            )
        )
        # The paper's per-branch matrices A, B, ... (C x d each) stacked into one d -> M*C conv.
        self.select = nn.Conv2d(hidden, num_branches * out_channels, 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # ResNet initialisation (the module replaces a ResNet conv): He-normal fan_out, norms 1 / 0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for norm in [b.norm for b in self.branches] + [self.fuse.norm]:
            if getattr(norm, "weight", None) is not None:
                nn.init.ones_(norm.weight)
                nn.init.zeros_(norm.bias)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """The branch outputs ``U_m`` stacked: (N, M, C, H', W')."""
        return torch.stack([branch(x) for branch in self.branches], dim=1)

    def attention(self, u: torch.Tensor) -> torch.Tensor:
        """Per-channel branch weights (N, M, C, 1, 1) for stacked branches ``u``; they sum to 1 over M."""
        n, m, c = u.shape[:3]
        s = u.sum(dim=1).mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1): GAP of the fused U
        logits = self.select(self.fuse(s)).view(n, m, c, 1, 1)  # (N, M, C, 1, 1), branch-major
        return logits.softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.split(x)  # (N, M, C, H', W')
        return (self.attention(u) * u).sum(dim=1)  # (N, C, H', W')
