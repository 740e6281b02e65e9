"""Non-local block (embedded Gaussian), 2-D.

Paper: Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018, https://arxiv.org/abs/1711.07971.

Choices: follows the paper where it and the official Caffe2 code (facebookresearch/video-nonlocal-net)
differ: the max-pool comes *after* phi and g (the official code pools the input before them, which is
not the same since max does not commute with a 1x1 conv) and the affinity is not scaled by
1/sqrt(C') (an option in the official code). The pool uses ``ceil_mode=True``: identical to the paper
on even sizes, and on odd sizes (or 1x1 maps) every position stays covered by some key. Weight
initialisation is the official one. Unlike the official code, the W conv has no bias when a norm
follows it: a bias before a norm layer is redundant and gets no gradient in training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class NonLocal2d(nn.Module):
    """``z = x + W(softmax(theta(x)^T phi(x)) g(x))``: every position attends to every (pooled) position.

    The norm after W is zero-initialised (or W itself when ``norm_layer=None``), so the block is the
    identity at init and can be inserted into a pretrained network without changing its output.
    Memory grows as H*W * (H/2)*(W/2) with ``sub_sample`` and as (H*W)^2 without.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        reduction: int = 2,
        sub_sample: bool = True,
        norm_layer: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"reduction must be an int >= 1 (inner width is C // reduction), got {reduction!r}")
        self.out_channels = in_channels
        inner = max(1, in_channels // reduction)
        self.theta = nn.Conv2d(in_channels, inner, 1)
        self.phi = nn.Conv2d(in_channels, inner, 1)
        self.g = nn.Conv2d(in_channels, inner, 1)
        # 2x2 max-pool on keys and values; ceil_mode keeps the last odd row/column (and 1x1 maps).
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True) if sub_sample else nn.Identity()
        self.out_conv = nn.Conv2d(inner, in_channels, 1, bias=norm_layer is None)  # W in the paper
        self.out_norm = norm_layer(in_channels) if norm_layer is not None else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Official code: Gaussian(std=0.01) weights and zero biases for all four convs, and the norm's
        # scale set to 0 (we also zero its shift) so that the residual branch starts at exactly 0.
        for conv in (self.theta, self.phi, self.g, self.out_conv):
            nn.init.normal_(conv.weight, std=0.01)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        if isinstance(self.out_norm, nn.Identity):
            nn.init.zeros_(self.out_conv.weight)
        else:
            nn.init.zeros_(self.out_norm.weight)
            nn.init.zeros_(self.out_norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        phi = self.pool(self.phi(x)).flatten(2)  # (N, C', P), P = ceil(H/2) * ceil(W/2) when sub-sampled
        g = self.pool(self.g(x)).flatten(2).transpose(1, 2)  # (N, P, C')
        attn = torch.softmax(theta @ phi, dim=-1)  # (N, HW, P), each row sums to 1; unscaled as in the paper
        y = (attn @ g).transpose(1, 2).reshape(n, -1, h, w)  # (N, C', H, W)
        return x + self.out_norm(self.out_conv(y))
