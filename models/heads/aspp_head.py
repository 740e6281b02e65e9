"""DeepLabV3 head: atrous spatial pyramid pooling (ASPP) on stage 4, then the classifier.

Paper: Chen, Papandreou, Schroff, Adam, "Rethinking Atrous Convolution for Semantic Image Segmentation",
arXiv 2017, https://arxiv.org/abs/1706.05587.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from .context_head import ContextHead, NormLayer, Width


class ASPPHead(ContextHead):
    """stage 4 (C) -> ASPP (1x1 and 3x3 at rates 12, 24, 36, plus image pooling; each to 256, projected to 256)
    -> dropout 0.1 -> 1x1 classifier.

    No conv after the ASPP: its 1x1 projection is DeepLabV3's last conv. The rates are the
    output-stride-8 ones (``context_args: {dilations: [1, 6, 12, 18]}`` at output stride 16).
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
        context: str | None = "aspp",
        context_args: Mapping[str, Any] | None = None,
        num_context: int = 1,
        post_conv: bool = False,
        concat_input: bool = False,
        bottleneck: int | None = None,
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
