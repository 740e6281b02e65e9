"""SSH context module: 5x5 and 7x7 receptive fields from stacked 3x3 convs on a halved stem.

Paper: Najibi, Samangouei, Chellappa, Davis, "SSH: Single Stage Headless Face Detector", ICCV 2017,
https://arxiv.org/abs/1708.03979. Official code: mahyarnajibi/SSH (Caffe, ``train_ssh.prototxt``).

Choices: this is only the context half of SSH's detection module (its separate 3x3 branch is left to the
caller). As in the survey, every 3x3 conv has a bias and is followed by norm + ReLU; the paper's VGG has no
norm, and the official code / RetinaFace port put no ReLU on the last conv of each branch but a ReLU after the
concat. That is the same function: ReLU acts per element, so ``relu(cat[a, b]) == cat[relu(a), relu(b)]``.
Odd C loses one channel (``out_channels = 2 * (C // 2)``), as in the survey. Init follows the official
prototxt: conv weights N(0, 0.01), biases 0 (the norms keep PyTorch's weight 1 / bias 0).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation


class SSHContext(nn.Module):
    """``stem = CBR(C -> C/2)``; ``y = cat[CBR(stem), CBR(CBR(stem))]``, with CBR = 3x3 conv + norm + ReLU.

    Two stacked 3x3 convs see a 5x5 window and three see 7x7, at the cost of small 3x3 kernels.
    """

    def __init__(self, in_channels: int, *, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        if in_channels < 2:
            raise ValueError(
                f"in_channels must be >= 2 (the branch width is C // 2), got {in_channels}; "
                "give the head a wider reduce_channels"
            )
        half = in_channels // 2
        self.out_channels = 2 * half

        def cbr(cin: int) -> nn.Sequential:
            return Conv2dNormActivation(cin, half, 3, padding=1, norm_layer=norm_layer, bias=True)

        self.stem = cbr(in_channels)
        self.branch5 = cbr(half)  # 5x5 receptive field with the stem
        self.branch7 = nn.Sequential(cbr(half), cbr(half))  # 7x7 receptive field with the stem
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)  # (B, C/2, H, W)
        return torch.cat([self.branch5(stem), self.branch7(stem)], dim=1)  # (B, 2 * (C // 2), H, W)
