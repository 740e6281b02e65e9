"""Asymmetric Convolution Block (ACB): a k x k conv trained with extra k x 1 and 1 x k branches.

Paper: Ding, Guo, Ding, Han, "ACNet: Strengthening the Kernel Skeletons for Powerful CNN via
Asymmetric Convolution Blocks", ICCV 2019, https://arxiv.org/abs/1908.03930.

Follows the paper and the official code (github.com/DingXiaoH/ACNet, ``acnet/acb.py``): the
asymmetric kernels are k x 1 and 1 x k, not always 3 x 1 / 1 x 3 as in the survey's listing (the
two agree for k = 3). Unlike both, the branch paddings account for dilation, and a zero crop is
skipped (the survey's ``r:-r`` crop returns an empty map when r = 0). ``fuse()`` is the paper's
deploy-time conversion, absent from the survey.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .conv_bn_folding import fold_conv_bn


class ACBlock(nn.Module):
    """``norm(conv_kxk(x)) + norm(conv_kx1(x)) + norm(conv_1xk(x))`` with aligned centre taps.

    After training, ``fuse()`` turns the three branches into one k x k conv with bias: in eval mode
    each branch is linear, and a k x 1 kernel is a k x k kernel that is zero off its centre column.
    """

    normalizes_output = True
    DENSE_ALIASES = {"conv": "square.conv", "norm": "square.norm"}

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 3 (the branches share a centre tap), got {kernel_size}")
        padding = dilation * (kernel_size // 2) if padding is None else padding
        if padding < 0:
            raise ValueError(f"padding must be >= 0 (or None for 'same'), got {padding}")
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        # The centre tap of the square kernel reads input offset ``dilation * (k // 2) - padding``.
        # The width-1 side of an asymmetric kernel has only that tap, so it needs padding ``edge``;
        # a negative ``edge`` becomes a crop of the input (conv padding cannot be negative).
        edge = padding - dilation * (kernel_size // 2)
        self.crop = max(-edge, 0)

        def branch(shape: tuple[int, int], pad: tuple[int, int]) -> nn.Sequential:
            conv = nn.Conv2d(in_channels, out_channels, shape, stride, pad, dilation, groups=groups, bias=False)
            return nn.Sequential(OrderedDict(conv=conv, norm=norm_layer(out_channels)))

        self.square = branch((kernel_size, kernel_size), (padding, padding))
        self.ver = branch((kernel_size, 1), (padding, max(edge, 0)))
        self.hor = branch((1, kernel_size), (max(edge, 0), padding))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Official ACB: norm weight 1 / bias 0 in all three branches; conv weights as the host ResNet
        # (He-normal, fan_out), since the block replaces its 3x3 convs.
        for b in (self.square, self.ver, self.hor):
            nn.init.kaiming_normal_(b.conv.weight, mode="fan_out", nonlinearity="relu")
            if getattr(b.norm, "weight", None) is not None:
                nn.init.ones_(b.norm.weight)
                nn.init.zeros_(b.norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.crop
        x_ver = x[:, :, :, c : x.shape[3] - c] if c else x  # (N, C, H, W - 2c): crop columns
        x_hor = x[:, :, c : x.shape[2] - c, :] if c else x  # (N, C, H - 2c, W): crop rows
        return self.square(x) + self.ver(x_ver) + self.hor(x_hor)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """One k x k conv with bias equal to this block in eval mode (same stride/padding/dilation/groups).

        Folds each BatchNorm into its branch, then adds the k x 1 kernel into the centre column and the
        1 x k kernel into the centre row of the square kernel. Needs BatchNorm norms in eval mode.
        """
        branches = (self.square, self.ver, self.hor)
        if not all(isinstance(b.norm, _BatchNorm) for b in branches):
            raise ValueError("ACBlock.fuse() folds BatchNorm only; build the block with a BatchNorm norm_layer")
        square, ver, hor = (fold_conv_bn(b.conv, b.norm) for b in branches)
        c = self.kernel_size // 2
        square.weight[:, :, :, c] += ver.weight[:, :, :, 0]  # (out, in/groups, k): centre column
        square.weight[:, :, c, :] += hor.weight[:, :, 0, :]  # (out, in/groups, k): centre row
        square.bias += ver.bias + hor.bias
        return square
