"""SP head of SPNet: two mixed pooling modules (MPM) on the reduced stage-4 features.

Paper: Hou, Zhang, Cheng, Feng, "Strip Pooling: Rethinking Spatial Pooling for Scene Parsing", CVPR 2020,
https://arxiv.org/abs/2003.13328. The official code's ``SPHead``; with 19 classes on ResNet's 2048
channels it has the official 15,623,699 parameters (``tests/test_heads.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from .context_head import ContextHead, NormLayer, Width


class SPHead(ContextHead):
    """stage 4 (C) -> 1x1 conv to C/2 -> MPM -> MPM -> 3x3 conv to C/4 -> dropout 0.1 -> 1x1 classifier.

    The paper's ablation varies ``num_context`` (1 or 2 MPMs); the MPM's pooling grids are
    ``context_args: {pool_sizes: [20, 12]}`` (its defaults).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        *,
        norm_layer: NormLayer = nn.BatchNorm2d,
        in_stage: int = 4,
        reduce: str | None = "1x1",
        reduce_channels: Width | None = 0.5,
        context: str | None = "mpm",
        context_args: Mapping[str, Any] | None = None,
        num_context: int = 2,
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
