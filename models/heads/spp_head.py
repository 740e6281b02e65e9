"""SPP head: YOLOv3-SPP's max-pool pyramid between two 1x1 convs, as in the detector's neck.

Source: no paper; the darknet config ``yolov3-spp.cfg`` (https://github.com/AlexeyAB/darknet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from .context_head import ContextHead, NormLayer, Width


class SPPHead(ContextHead):
    """stage 4 (C) -> 1x1 conv to C/4 -> SPP (max-pools 13, 9, 5 and the input: C/4 -> C) -> 1x1 conv to C/4
    -> dropout 0.1 -> 1x1 classifier."""

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        *,
        norm_layer: NormLayer = nn.BatchNorm2d,
        in_stage: int = 4,
        reduce: str | None = "1x1",
        reduce_channels: Width | None = None,
        context: str | None = "spp",
        context_args: Mapping[str, Any] | None = None,
        num_context: int = 1,
        post_conv: bool = False,
        concat_input: bool = False,
        bottleneck: int | None = 1,
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
