"""Semantic Embedding Branch (SEB) of ExFuse: gate low-level features with upsampled high-level semantics.

Paper: Zhang, Zhang, Peng, Xue, Sun, "ExFuse: Enhancing Feature Fusion for Semantic Segmentation", ECCV 2018,
https://arxiv.org/abs/1804.03821. No official code was released.

Choices: the structure follows the survey (one high level, 3x3 conv with bias on it, 1x1 conv with bias on the
low level, elementwise product). The paper multiplies the low-level map by 3x3-conv'd, bilinearly upsampled
features of the higher levels; whether it also projects the low level with a 1x1 is not checked here. Neither
the survey nor the paper's sketch has a norm or an activation, so there are none. Fixed: the survey upsamples by a
hard-coded x2; we resize to ``low.shape[-2:]`` (bilinear, ``align_corners=True``), so same-resolution stages
of an output-stride-8 backbone and odd sizes work. Init: PyTorch's default conv init (nothing official).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SemanticEmbeddingBranch(nn.Module):
    """``y = resize_to(low)(conv3x3(high)) * conv1x1(low)``; ``forward(high, low)`` -> (B, out, *low.shape[-2:]).

    Multiplying (rather than adding) lets the coarse semantics suppress low-level responses where the
    high level sees no object, which is how ExFuse injects semantics into the low level.

    Args:
        in_channels: width of the high-level (coarse) input.
        low_channels: width of the low-level (fine) input, whose size sets the output size.
    """

    def __init__(self, in_channels: int, out_channels: int, *, low_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.high_conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.low_conv = nn.Conv2d(low_channels, out_channels, 1)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        semantic = F.interpolate(
            self.high_conv(high), size=low.shape[-2:], mode="bilinear", align_corners=True
        )  # (B, out, H_low, W_low)
        return semantic * self.low_conv(low)  # (B, out, H_low, W_low)
