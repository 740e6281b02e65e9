"""Models: ``build_model(cfg)`` turns the ``model`` section of a config into a ``SegmentationModel``.

This is the one place where config strings become classes and callables; everything below takes
plain, typed arguments and can be built in a Python shell without a config.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from utils.registry import construct, lookup

from .backbones import ResNet
from .heads import HEADS
from .modules import BLOCK_ATTENTION, CONTEXT_MODULES
from .segmentor import SegmentationModel
from .weights import load_backbone_weights

logger = logging.getLogger(__name__)

__all__ = [
    "BLOCK_ATTENTION",
    "CONTEXT_MODULES",
    "HEADS",
    "SegmentationModel",
    "build_backbone",
    "build_model",
    "build_norm_layer",
]


def build_norm_layer(name: str, groups: int = 32) -> Callable[[int], nn.Module]:
    """``"bn"`` -> BatchNorm2d (converted to SyncBatchNorm by multi-GPU training), ``"gn"`` -> GroupNorm."""
    if name == "bn":
        return nn.BatchNorm2d
    if name == "gn":
        return functools.partial(nn.GroupNorm, groups)
    raise ValueError(f"unknown norm {name!r}; choose from ['bn', 'gn']")


def build_backbone(cfg: Any, norm_layer: Callable[[int], nn.Module], *, load_pretrained: bool = True) -> ResNet:
    """Dilated ResNet from a ``BackboneConfig``, with its ImageNet weights when ``pretrained`` is set."""
    attention = None
    if cfg.attention is not None:
        attention_cls = lookup(BLOCK_ATTENTION, cfg.attention, "model.backbone.attention")
        attention = functools.partial(
            construct, attention_cls, "model.backbone.attention_args", norm_layer=norm_layer, **cfg.attention_args
        )
    backbone = ResNet(
        cfg.depth,
        stage_blocks=cfg.stage_blocks,
        base_width=cfg.base_width,
        deep_stem=cfg.deep_stem,
        output_stride=cfg.output_stride,
        multi_grid=cfg.multi_grid,
        norm_layer=norm_layer,
        attention=attention,
        attention_placement=cfg.attention_placement,
        attention_position=cfg.attention_position,
    )
    if cfg.pretrained and load_pretrained:
        report = load_backbone_weights(backbone, cfg.pretrained)
        logger.info("%s", report)
    return backbone


def build_model(cfg: Any, *, load_pretrained: bool = True) -> SegmentationModel:
    """Build the segmentor from a ``Config`` (or its ``ModelConfig``).

    ``load_pretrained=False`` skips the backbone's ImageNet weights, e.g. when a full checkpoint
    is loaded right after (evaluation, resume).
    """
    cfg = getattr(cfg, "model", cfg)
    norm_layer = build_norm_layer(cfg.norm, cfg.norm_groups)
    # weights load last, so that a typo in the heads' config fails before a large file is read
    backbone = build_backbone(cfg.backbone, norm_layer, load_pretrained=False)
    head_cls = lookup(HEADS, cfg.head, "model.head")
    head = construct(
        head_cls, "model.head_args", backbone.out_channels[-1], cfg.num_classes, norm_layer=norm_layer, **cfg.head_args
    )
    aux_head = None
    if cfg.aux_head is not None:
        aux_cls = lookup(HEADS, cfg.aux_head, "model.aux_head")
        aux_head = construct(
            aux_cls,
            "model.aux_head_args",
            backbone.out_channels[-2],
            cfg.num_classes,
            norm_layer=norm_layer,
            **cfg.aux_head_args,
        )
    if cfg.backbone.pretrained and load_pretrained:
        logger.info("%s", load_backbone_weights(backbone, cfg.backbone.pretrained))
    return SegmentationModel(backbone, head, aux_head)
