"""BlazeBlock (single and double) of BlazeFace: 5x5 depthwise-separable residual blocks for mobile GPUs.

Paper: Bazarevsky, Kartynnik, Vakunov, Raveendran, Grundmann, "BlazeFace: Sub-millisecond Neural Face
Detection on Mobile GPUs", CVPR Workshops 2019, https://arxiv.org/abs/1907.05047.

Choices: the structure follows the survey (the tkat0/PyTorch_BlazeFace port): norm after every conv, no
activation inside the single block, ReLU only between the halves of the double block and after the residual
add. Convs keep their bias as in the survey, although a bias right before a norm is redundant (in train mode
its gradient is zero). Fixed: with stride 2 the shortcut max-pool uses ``ceil_mode=True``, so on odd sizes it
gives ``ceil(H / 2)`` like the depthwise conv (k odd, padding (k - 1) / 2, stride 2:
``floor((H - 1) / 2) + 1 = ceil(H / 2)``); the survey's floor-mode pool gave ``floor(H / 2)``. Init: the survey's
``initialize`` (He-normal fan_in conv weights, zero biases; norms keep weight 1 / bias 0), called here.
A poor fit for a dilated backbone: there is no dilation argument.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import Conv2dNormActivation


class BlazeBlock(nn.Module):
    """``y = relu(main(x) + shortcut(x))``.

    - single (``mid_channels=None``): kxk depthwise (stride) + norm -> 1x1 in->out + norm.
    - double: kxk depthwise (stride) + norm -> 1x1 in->mid + norm -> ReLU -> kxk depthwise + norm
      -> 1x1 mid->out + norm (the paper's narrow bottleneck, e.g. 96 -> 24 -> 96).
    - shortcut: 2x2 max-pool (stride 2 only), then ``out - in`` zero channels appended at the end.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        mid_channels: int | None = None,
        stride: int = 1,
        kernel_size: int = 5,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        # Library only (no config reaches it), so its constructor is where a caller's mistake is caught.
        if out_channels < in_channels:
            raise ValueError(
                f"out_channels must be >= in_channels (the shortcut can only append zero channels), "
                f"got in_channels={in_channels}, out_channels={out_channels}"
            )
        if mid_channels is not None and mid_channels < 1:
            raise ValueError(f"mid_channels must be >= 1, or None for a single block, got {mid_channels}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2 (the shortcut is a 2x2 max-pool), got {stride}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd so the padding keeps the size, got {kernel_size}")
        self.out_channels = out_channels
        self.channel_pad = out_channels - in_channels

        def conv(cin: int, cout: int, k: int, s: int = 1, relu: bool = False) -> nn.Sequential:
            groups = cin if k > 1 else 1  # the kxk convs are depthwise
            act = nn.ReLU if relu else None
            return Conv2dNormActivation(
                cin, cout, k, s, padding=k // 2, groups=groups, norm_layer=norm_layer, activation_layer=act, bias=True
            )

        width = out_channels if mid_channels is None else mid_channels
        layers = [conv(in_channels, in_channels, kernel_size, stride), conv(in_channels, width, 1)]
        if mid_channels is not None:
            layers[-1] = conv(in_channels, width, 1, relu=True)
            layers += [conv(width, width, kernel_size), conv(width, out_channels, 1)]
        self.main = nn.Sequential(*layers)
        # ceil_mode: ceil(H / 2) rows like the stride-2 depthwise conv, also on odd H (and H = 1).
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True) if stride == 2 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.pool(x)  # (B, Cin, ceil(H/s), ceil(W/s))
        if self.channel_pad:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.channel_pad))  # (B, Cout, H/s, W/s), zeros at the end
        return torch.relu(self.main(x) + shortcut)
