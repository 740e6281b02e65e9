"""The (k, 1) conv of a width-pooled strip, with a fast path the CPU backends take."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StripConv(nn.Conv2d):
    """An ``nn.Conv2d`` (same parameters, same state dict) for the (H x 1) strips of strip pooling.

    On the CPU, a (k, 1) kernel over an (N, C, H, 1) input falls to PyTorch's slow non-oneDNN
    convolution (forward and backward, 20-35% slower than need be); the same sums as a 1-D conv
    over (N, C, H) do not. ``fast_path`` (on by default; ``train.fast.strip_conv`` /
    ``eval.fast.strip_conv`` switch it) takes the 1-D conv whenever the input is such a strip and
    the kernel has width 1; anything else runs the ordinary 2-D conv. Equal to float rounding
    (tests/test_fast_paths.py).
    """

    fast_path: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.fast_path and x.dim() == 4 and x.shape[3] == 1 and self.kernel_size[1] == 1):
            return super().forward(x)
        if self.padding_mode != "zeros" or isinstance(self.padding, str) or self.padding[1] != 0:
            return super().forward(x)
        out = F.conv1d(
            x.squeeze(3),
            self.weight.squeeze(3),
            self.bias,
            self.stride[0],
            self.padding[0],
            self.dilation[0],
            self.groups,
        )
        out = out.unsqueeze(3)  # (N, C', H', 1)
        if not out.is_contiguous():
            # The 1-D conv of a channels_last strip (or with channels_last weights) is (N, H', C') in
            # memory, and unsqueeze gives the new width-1 dim stride 1. PyTorch's CPU batch_norm
            # backward misreads that layout against an NCHW grad_output: wrong gradients for the BN
            # after this conv and everything before it (torch 2.14; tests/test_fast_paths.py). The
            # 2-D conv returns canonical channels_last strides; so does this.
            out = out.clone(memory_format=torch.channels_last)
        return out
