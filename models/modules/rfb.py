"""Receptive Field Block (RFB) and its small variant RFB-s, multi-branch dilated context with a shortcut.

Paper: Liu, Huang, Wang, "Receptive Field Block Net for Accurate and Fast Object Detection", ECCV 2018,
https://arxiv.org/abs/1711.07767. Structure and widths follow the official code (``BasicRFB`` and
``BasicRFB_a`` in ruinmessi/RFBNet ``models/RFB_Net_vgg.py``), floor divisions included.

Choices: the official ``BasicConv`` hard-codes BatchNorm (eps 1e-5, momentum 0.01); we use the configured
``norm_layer``. Defaults ``scale=0.1, visual=1`` are the official class defaults; RFBNet's detector passes
``scale=1.0`` and mostly ``visual=2``. The paper draws rates 1, 3, 5; the code's dilations are ``visual``,
``visual + 1``, ``2 * visual + 1`` (1, 2, 3 at ``visual=1``; 2, 3, 5 at ``visual=2``): we follow the code.
Fixed: the official RFB-s never strides branches 0 and 1, so ``stride=2`` fails at the concat; here every
branch strides: branches 0 and 1 on their first spatial conv, branches 2 and 3 where the official code does
(b2's 1x3, b3's 3x1). Every conv uses "same" padding (``2p = d (k - 1)``), so a stride-s conv gives
``ceil(H / s)``, like the 1x1 stride-s shortcut, on odd sizes too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

_MIN_CHANNELS = 16  # keeps the narrowest inner width (3 * (i // 2) in RFB, i // 4 in RFB-s) >= 1


def _conv(
    cin: int,
    cout: int,
    kernel_size: int | tuple[int, int],
    norm_layer: Callable[[int], nn.Module],
    *,
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int = 1,
    relu: bool = True,
) -> nn.Sequential:
    """The official ``BasicConv``: bias-free conv -> norm -> optional ReLU."""
    return Conv2dNormActivation(
        cin,
        cout,
        kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        norm_layer=norm_layer,
        activation_layer=nn.ReLU if relu else None,
        bias=False,
    )


class _ReceptiveFieldBlock(nn.Module):
    """Shared tail: ``y = relu(scale * linear(cat(branches(x))) + shortcut(x))``."""

    def __init__(self, in_channels: int, out_channels: int | None, stride: int, scale: float) -> None:
        super().__init__()
        if in_channels < _MIN_CHANNELS:
            raise ValueError(
                f"in_channels must be >= {_MIN_CHANNELS} so every inner width is >= 1, got {in_channels}; "
                "give the head a wider reduce_channels"
            )
        if out_channels is not None and out_channels < 1:
            raise ValueError(f"out_channels must be >= 1 (or null for in_channels), got {out_channels}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.out_channels = in_channels if out_channels is None else out_channels
        self.scale = float(scale)

    def _finish(self, in_channels: int, cat_channels: int, stride: int, norm_layer: Callable[[int], nn.Module]) -> None:
        self.linear = _conv(cat_channels, self.out_channels, 1, norm_layer, relu=False)
        self.shortcut = _conv(in_channels, self.out_channels, 1, norm_layer, stride=stride, relu=False)
        # Official train_RFB.py: He-normal (fan_out) conv weights; the norms keep PyTorch's weight 1 / bias 0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cat = torch.cat([branch(x) for branch in self.branches], dim=1)  # (B, sum of widths, H/s, W/s)
        return torch.relu(self.scale * self.linear(cat) + self.shortcut(x))  # (B, out, H/s, W/s)


class RFB(_ReceptiveFieldBlock):
    """RFB (official ``BasicRFB``): three branches of growing kernel and dilation, i = in // 8.

    - b0: 1x1 (stride) in->2i, 3x3 dilation v.
    - b1: 1x1 in->i, 3x3 (stride) i->2i, 3x3 dilation v + 1.
    - b2: 1x1 in->i, 3x3 i->3(i // 2), 3x3 (stride) ->2i, 3x3 dilation 2v + 1.
    - 1x1 6i->out on the concat; 1x1 (stride) in->out shortcut; the last conv of each branch has no ReLU.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        stride: int = 1,
        scale: float = 0.1,
        visual: int = 1,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__(in_channels, out_channels, stride, scale)
        if visual < 1:
            raise ValueError(f"visual must be >= 1 (it sets the dilations v, v + 1, 2v + 1), got {visual}")
        i, v, n = in_channels // 8, visual, norm_layer
        self.branches = nn.ModuleList(
            [
                nn.Sequential(
                    _conv(in_channels, 2 * i, 1, n, stride=stride),
                    _conv(2 * i, 2 * i, 3, n, padding=v, dilation=v, relu=False),
                ),
                nn.Sequential(
                    _conv(in_channels, i, 1, n),
                    _conv(i, 2 * i, 3, n, stride=stride, padding=1),
                    _conv(2 * i, 2 * i, 3, n, padding=v + 1, dilation=v + 1, relu=False),
                ),
                nn.Sequential(
                    _conv(in_channels, i, 1, n),
                    _conv(i, 3 * (i // 2), 3, n, padding=1),
                    _conv(3 * (i // 2), 2 * i, 3, n, stride=stride, padding=1),
                    _conv(2 * i, 2 * i, 3, n, padding=2 * v + 1, dilation=2 * v + 1, relu=False),
                ),
            ]
        )
        self._finish(in_channels, 6 * i, stride, n)


class RFBSmall(_ReceptiveFieldBlock):
    """RFB-s (official ``BasicRFB_a``): four narrow branches with 1x3 / 3x1 factorisations, i = in // 4.

    - b0: 1x1 in->i, 3x3 (stride).        - b1: 1x1 in->i, 3x1 (stride), 3x3 dilation 3.
    - b2: 1x1 in->i, 1x3 (stride), 3x3 dilation 3.
    - b3: 1x1 in->i // 2, 1x3 ->3(i // 4), 3x1 (stride) ->i, 3x3 dilation 5.
    - 1x1 4i->out on the concat, same shortcut, scale and final ReLU as RFB.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        stride: int = 1,
        scale: float = 0.1,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__(in_channels, out_channels, stride, scale)
        i, n = in_channels // 4, norm_layer
        self.branches = nn.ModuleList(
            [
                nn.Sequential(
                    _conv(in_channels, i, 1, n),
                    _conv(i, i, 3, n, stride=stride, padding=1, relu=False),  # stride added (fix)
                ),
                nn.Sequential(
                    _conv(in_channels, i, 1, n),
                    _conv(i, i, (3, 1), n, stride=stride, padding=(1, 0)),  # stride added (fix)
                    _conv(i, i, 3, n, padding=3, dilation=3, relu=False),
                ),
                nn.Sequential(
                    _conv(in_channels, i, 1, n),
                    _conv(i, i, (1, 3), n, stride=stride, padding=(0, 1)),
                    _conv(i, i, 3, n, padding=3, dilation=3, relu=False),
                ),
                nn.Sequential(
                    _conv(in_channels, i // 2, 1, n),
                    _conv(i // 2, 3 * (i // 4), (1, 3), n, padding=(0, 1)),
                    _conv(3 * (i // 4), i, (3, 1), n, stride=stride, padding=(1, 0)),
                    _conv(i, i, 3, n, padding=5, dilation=5, relu=False),
                ),
            ]
        )
        self._finish(in_channels, 4 * i, stride, n)
