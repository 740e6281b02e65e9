"""SSH head: SSH's context module on the reduced stage-4 features (ours: the paper is a face detector).

Paper: Najibi, Samangouei, Chellappa, Davis, "SSH: Single Stage Headless Face Detector", ICCV 2017,
https://arxiv.org/abs/1708.03979. The paper has no segmentation head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from .context_head import ContextHead, NormLayer, Width


class SSHHead(ContextHead):
    """stage 4 (C) -> 3x3 conv to C/4 -> SSH context (5x5 and 7x7 receptive fields from stacked 3x3 convs)
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
        context: str | None = "ssh",
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
