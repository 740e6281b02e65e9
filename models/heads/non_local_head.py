"""Non-local head: a non-local block (embedded Gaussian) between two 3x3 convs, with the input concatenated.

Paper: Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018, https://arxiv.org/abs/1711.07971.
The paper puts non-local blocks in the backbone; this head form is MMSegmentation's ``NLHead``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from .context_head import ContextHead, NormLayer, Width


class NonLocalHead(ContextHead):
    """stage 4 (C) -> 3x3 conv to C/4 -> non-local block -> 3x3 conv to C/4 -> concat with stage 4 (C + C/4)
    -> 3x3 conv to C/4 -> dropout 0.1 -> 1x1 classifier."""

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        *,
        norm_layer: NormLayer = nn.BatchNorm2d,
        in_stage: int = 4,
        reduce: str | None = "3x3",
        reduce_channels: Width | None = None,
        context: str | None = "nonlocal",
        context_args: Mapping[str, Any] | None = None,
        num_context: int = 1,
        post_conv: bool = True,
        concat_input: bool = True,
        bottleneck: int | None = 3,
        channels: Width = 0.25,
        low_level: str | None = None,
        low_level_stage: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(
            in_channels, num_classes, norm_layer=norm_layer, in_stage=in_stage, reduce=reduce,
            reduce_channels=reduce_channels, context=context, context_args=context_args, num_context=num_context,
            post_conv=post_conv, concat_input=concat_input, bottleneck=bottleneck, channels=channels,
            low_level=low_level, low_level_stage=low_level_stage, dropout=dropout,
        )  # fmt: skip
