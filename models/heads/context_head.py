"""The machinery every head shares: reduce -> context module(s) -> bottleneck -> classifier.

Each paper's head (``fcn_head.py``, ``sp_head.py``, ``psp_head.py``, ...) is a subclass that
states its structure as the defaults of its signature, so every part stays settable from the
config (``model.head_args.<head>.<argument>``). The context module is picked by name from
``CONTEXT_MODULES``, so a new context module is a head with no new head code
(``model.head_args.fcn.context: <name>``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

from utils.registry import BuildError, construct, lookup

from ..modules import CONTEXT_MODULES, LOW_LEVEL_FUSIONS, CrossChannelPool

REDUCTIONS = ("1x1", "3x3", "channel_max", "channel_avg")
Width = int | float  # an int is a channel count, a float a fraction of the head's input channels
NormLayer = Callable[[int], nn.Module]


def resolve_width(width: int | float, in_channels: int, name: str) -> int:
    """An int is a channel count; a float is a fraction of the head's input channels. ``name``: the argument."""
    channels = width if isinstance(width, int) else round(width * in_channels)
    if channels < 1:
        raise BuildError(
            name, f"{width} of {in_channels} input channels is {channels} channels; use a larger fraction or a count"
        )
    return channels


class ContextHead(nn.Module):
    """``classifier(dropout(low_level?(bottleneck(cat?[x, post(context(reduce(x)))]))))``, parts optional.

    ``classifier_layer`` names the final conv, one output channel per class: fine-tuning into other
    classes re-initialises it (or copies its rows) and loads everything else strictly
    (``models/weights.py``). A head of another form names its own.

    ``in_channels`` are the channels of every backbone stage (``backbone.out_channels``); the head
    takes stage ``in_stage`` (1-based) and, with ``low_level``, also ``low_level_stage``: its
    ``in_stages`` attribute tells the segmentor which features to pass, in this order. Every
    argument is required: the paper heads supply them, in this (the data's) order.

    Args:
        reduce: ``1x1`` / ``3x3`` conv + norm + ReLU, or parameter-free ``channel_max`` /
            ``channel_avg`` cross-channel pooling, to ``reduce_channels``; None: no reduction.
        reduce_channels: width after ``reduce``; None: ``channels``.
        context: key of ``CONTEXT_MODULES`` (None: no context module, the FCN head).
        context_args: keyword arguments of the context module.
        num_context: stacked context modules with separate weights (SPNet: two MPMs).
        post_conv: a 3x3 conv to ``channels`` after the context (the "convb" of the non-local / CCNet heads).
        concat_input: concatenate the head's input before the bottleneck (non-local, GC, CCNet).
        bottleneck: kernel size of the conv to ``channels`` before the classifier (None: no conv).
        channels: width of the post conv and the bottleneck; an int is a channel count, a float a
            fraction of the input channels (0.25 of ResNet's 2048 = 512).
        low_level: key of ``LOW_LEVEL_FUSIONS`` (``seb``: ExFuse's semantic embedding branch)
            fusing stage ``low_level_stage`` into the head's output, which then has that
            stage's resolution.
        dropout: Dropout2d probability before the classifier.
    """

    classifier_layer = "classifier"

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        *,
        norm_layer: NormLayer = nn.BatchNorm2d,
        in_stage: int,
        reduce: str | None,
        reduce_channels: Width | None,
        context: str | None,
        context_args: Mapping[str, Any] | None,
        num_context: int,
        post_conv: bool,
        concat_input: bool,
        bottleneck: int | None,
        channels: Width,
        low_level: str | None,
        low_level_stage: int,
        dropout: float,
    ) -> None:
        super().__init__()
        in_channels = list(in_channels)
        self.in_stages = (in_stage,) if low_level is None else (in_stage, low_level_stage)
        for key, stage in (("in_stage", in_stage), ("low_level_stage", low_level_stage)):
            if not 1 <= stage <= len(in_channels):
                raise BuildError(key, f"stage {stage} does not exist: the backbone returns stages 1-{len(in_channels)}")
        c_in = in_channels[in_stage - 1]
        channels = resolve_width(channels, c_in, "channels")

        self.reduce, width = nn.Identity(), c_in
        if reduce is not None:
            width = channels if reduce_channels is None else resolve_width(reduce_channels, c_in, "reduce_channels")
            self.reduce = _reduction(reduce, c_in, width, norm_layer)

        if context is None and (context_args or num_context != 1):
            raise BuildError("context_args", "set only with a context module (context: <name>)")
        modules = []
        for _ in range(num_context if context is not None else 0):
            cls = lookup(CONTEXT_MODULES, context, "context")
            modules.append(
                construct(cls, "context_args", width, options=context_args, offered={"norm_layer": norm_layer})
            )
            width = modules[-1].out_channels
        self.context = nn.Sequential(*modules)

        self.post = Conv2dNormActivation(width, channels, 3, norm_layer=norm_layer) if post_conv else nn.Identity()
        width = channels if post_conv else width
        self.concat_input = concat_input
        width += c_in if concat_input else 0

        self.bottleneck = nn.Identity()
        if bottleneck is not None:
            self.bottleneck = Conv2dNormActivation(width, channels, bottleneck, norm_layer=norm_layer)
            width = channels

        self.low_level = None
        if low_level is not None:
            cls = lookup(LOW_LEVEL_FUSIONS, low_level, "low_level")
            self.low_level = cls(width, width, low_channels=in_channels[low_level_stage - 1])
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[0]  # (B, C_in, h, w): stage in_stage
        y = self.post(self.context(self.reduce(x)))
        if self.concat_input:
            y = torch.cat([x, y], dim=1)
        y = self.bottleneck(y)
        if self.low_level is not None:
            y = self.low_level(y, features[1])  # (B, width, H_low, W_low)
        return self.classifier(self.dropout(y))


def _reduction(kind: str, c_in: int, width: int, norm_layer: Callable[[int], nn.Module]) -> nn.Module:
    if kind == "1x1":
        return Conv2dNormActivation(c_in, width, 1, norm_layer=norm_layer)
    if kind == "3x3":
        return Conv2dNormActivation(c_in, width, 3, norm_layer=norm_layer)
    if kind in ("channel_max", "channel_avg"):
        return CrossChannelPool(c_in, width, mode=kind.removeprefix("channel_"))
    raise BuildError("reduce", f"unknown reduction {kind!r}; choose from {list(REDUCTIONS)} or null")
