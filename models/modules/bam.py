"""Bottleneck Attention Module (BAM): parallel channel and spatial gates, applied residually.

Paper: Park, Woo, Lee, Kweon, "BAM: Bottleneck Attention Module", BMVC 2018,
https://arxiv.org/abs/1807.06514. Official code: https://github.com/Jongchan/attention-module.
Choices: the branch layers follow the official code (BN + ReLU inside the channel MLP, no norm on either
branch's output; the paper's Eqs. 3-4 wrap each branch output in BN). Fusion defaults to the paper's
``sum``; ``product`` reproduces the official code. The channel gate pools globally, not with the survey's
``avg_pool2d(kernel=H)``, which is wrong for non-square maps. Initialisation follows the official
ResNet: He-normal (fan_out) spatial convs, PyTorch-default channel MLP weights, zero biases, norms 1/0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

_FUSIONS = ("sum", "product")


class BAM(nn.Module):
    """``y = x * (1 + sigmoid(Mc + Ms))`` (sum) or ``x * (1 + sigmoid(Mc * Ms))`` (product).

    ``Mc`` (B, C, 1, 1) comes from an MLP on the global average; ``Ms`` (B, 1, H, W) from a
    bottleneck of dilated 3x3 convs (padding = dilation keeps H x W, also for 1x1 maps). ``y / x``
    lies in (1, 2): the block can amplify features but never suppresses them below the identity.

    The channel MLP is built from 1x1 convs on the (B, C, 1, 1) pooled map, so ``norm_layer`` =
    BatchNorm2d on (B, C/r, 1, 1) is exactly the official BatchNorm1d on (B, C/r). Like it, it needs
    a batch of at least 2 in train mode.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        reduction: int = 16,
        dilation: int = 4,
        num_dilated_convs: int = 2,
        fusion: str = "sum",
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1 (hidden width C // reduction; paper: 16), got {reduction}")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1 (paper: 4), got {dilation}")
        if num_dilated_convs < 0:
            raise ValueError(f"num_dilated_convs must be >= 0 (paper: 2), got {num_dilated_convs}")
        if fusion not in _FUSIONS:
            raise ValueError(f"fusion must be 'sum' (paper) or 'product' (official code), got {fusion!r}")
        self.out_channels = in_channels
        self.fusion = fusion
        hidden = max(1, in_channels // reduction)

        def conv_norm_relu(cin: int, kernel_size: int, dil: int = 1) -> Conv2dNormActivation:
            # Default padding is dilation * (k - 1) // 2: same size. Biases as in the official code.
            return Conv2dNormActivation(cin, hidden, kernel_size, dilation=dil, norm_layer=norm_layer, bias=True)

        self.channel_gate = nn.Sequential(conv_norm_relu(in_channels, 1), nn.Conv2d(hidden, in_channels, 1))
        self.spatial_gate = nn.Sequential(
            conv_norm_relu(in_channels, 1),
            *(conv_norm_relu(hidden, 3, dilation) for _ in range(num_dilated_convs)),
            nn.Conv2d(hidden, 1, 1),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.reset_parameters()
                nn.init.zeros_(module.bias)
            elif module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()  # norms: weight 1, bias 0
        for module in self.spatial_gate.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def channel_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Channel logits ``Mc`` of shape (B, C, 1, 1), from the global average of ``x``."""
        return self.channel_gate(x.mean(dim=(2, 3), keepdim=True))  # (B, C, 1, 1)

    def spatial_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial logits ``Ms`` of shape (B, 1, H, W)."""
        return self.spatial_gate(x)  # (B, 1, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mc, ms = self.channel_attention(x), self.spatial_attention(x)
        logits = mc + ms if self.fusion == "sum" else mc * ms  # (B, C, H, W) by broadcasting
        return x * (1 + torch.sigmoid(logits))
