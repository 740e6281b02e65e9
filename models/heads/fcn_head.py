"""FCN head: the plain head of SPNet's auxiliary loss and of the paper's "Base FCN" row.

Paper: Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015,
https://arxiv.org/abs/1411.4038. The form is the official SPNet / PyTorch-Encoding ``FCNHead``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from .context_head import ContextHead, NormLayer, Width


class FCNHead(ContextHead):
    """stage 4 (C) -> 3x3 conv to C/4 -> dropout 0.1 -> 1x1 classifier.

    No context module: every other head adds one to this. As the auxiliary head it reads stage 3
    (``model.aux_head``; the builder passes ``in_stage=3``). Set ``context`` (and ``reduce``) to
    try a context module with no head code.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        *,
        norm_layer: NormLayer = nn.BatchNorm2d,
        in_stage: int = 4,
        reduce: str | None = None,
        reduce_channels: Width | None = None,
        context: str | None = None,
        context_args: Mapping[str, Any] | None = None,
        num_context: int = 1,
        post_conv: bool = False,
        concat_input: bool = False,
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
