"""Pooling a feature map into its row and column strips, and broadcasting them back: the two
tensor operations of strip pooling (SPM and MPM), with a fast path for channels_last maps on the CPU.

The plain path is ``x.mean(dim)`` and ``expand``. On a channels_last (NHWC) CPU tensor PyTorch's
reduction over H or W, in the forward (``mean``) and in the backward of ``expand`` (a sum), is
far slower than on NCHW. The fast path takes the kernels that have an NHWC implementation:
``adaptive_avg_pool2d`` to (H, 1) / (1, W), which is the same mean, and ``interpolate(mode="nearest")``
from the strip to H x W, which is the same copy along the strip (and ``expand`` equals the official
code's bilinear ``align_corners=True`` upsampling of a strip exactly). Equal to float rounding
(tests/test_fast_paths.py). CUDA and NCHW tensors keep the plain path: there it is not slow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _nhwc_on_cpu(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def pool_strips(x: torch.Tensor, fast: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> the width-pooled (B, C, H, 1) and the height-pooled (B, C, 1, W) strip."""
    _, _, h, w = x.shape
    if fast and _nhwc_on_cpu(x):
        return F.adaptive_avg_pool2d(x, (h, 1)), F.adaptive_avg_pool2d(x, (1, w))
    return x.mean(dim=3, keepdim=True), x.mean(dim=2, keepdim=True)


def broadcast_strips(
    strip_h: torch.Tensor, strip_w: torch.Tensor, like: torch.Tensor, fast: bool = True
) -> torch.Tensor:
    """(B, C, H, 1) and (B, C, 1, W) -> their sum at every (row, column), (B, C, H, W), in the memory
    format of ``like`` (the map the strips were pooled from) on the fast path."""
    h, w = strip_h.shape[2], strip_w.shape[3]
    if fast and _nhwc_on_cpu(like):
        # NHWC strips, or interpolate returns NCHW: a strip of an NCHW-weighted conv may be NCHW.
        def spread(strip: torch.Tensor) -> torch.Tensor:
            return F.interpolate(strip.contiguous(memory_format=torch.channels_last), size=(h, w), mode="nearest")

        return spread(strip_h) + spread(strip_w)
    return strip_h.expand(-1, -1, h, w) + strip_w.expand(-1, -1, h, w)
