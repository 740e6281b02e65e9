"""Models: ``build_model(cfg)`` turns the ``model`` section of a config into a ``SegmentationModel``.

This is the one place where config strings become classes and callables; everything below takes
plain, typed arguments and can be built in a Python shell without a config.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from utils.registry import check_options, construct, lookup

from .backbones import ResNet
from .heads import HEADS, RENAMED_HEADS
from .modules import BLOCK_ATTENTION, BLOCK_CONVS, CONTEXT_MODULES
from .segmentor import SegmentationModel
from .weights import load_backbone_weights

logger = logging.getLogger(__name__)

__all__ = [
    "BLOCK_ATTENTION",
    "BLOCK_CONVS",
    "CONTEXT_MODULES",
    "HEADS",
    "SegmentationModel",
    "build_backbone",
    "build_head",
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


def check_named_args(
    table: Mapping[str, Callable[..., Any]],
    args: Mapping[str, Any],
    key: str,
    positional: int,
    renamed: Mapping[str, str] | None = None,
) -> None:
    """Every entry of a per-name ``*_args`` table names a class of ``table`` and only its arguments.

    Checked for all entries, not only the selected one, so a typo fails now and not in the run
    that switches to that name. ``renamed``: as in ``lookup``.
    """
    for name, options in args.items():
        cls = lookup(table, name, key, renamed)
        check_options(cls, f"{key}.{name}", options, positional)


def build_backbone(cfg: Any, norm_layer: Callable[[int], nn.Module], *, load_pretrained: bool = True) -> ResNet:
    """Dilated ResNet from a ``BackboneConfig``, with its ImageNet weights when ``pretrained`` is set."""
    check_named_args(BLOCK_ATTENTION, cfg.attention_args, "model.backbone.attention_args", 1)
    check_named_args(BLOCK_CONVS, cfg.block_conv_args, "model.backbone.block_conv_args", 2)
    attention = _factory(BLOCK_ATTENTION, cfg.attention, cfg.attention_args, "model.backbone.attention", norm_layer)
    block_conv = _factory(BLOCK_CONVS, cfg.block_conv, cfg.block_conv_args, "model.backbone.block_conv", norm_layer)
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
        block_conv=block_conv,
        block_conv_placement=cfg.block_conv_placement,
        checkpoint_stages=cfg.checkpoint_stages,
    )
    if cfg.pretrained and load_pretrained:
        report = load_backbone_weights(backbone, cfg.pretrained)
        logger.info("%s", report)
    return backbone


def _factory(
    table: Mapping[str, Callable[..., nn.Module]],
    name: str | None,
    named_args: Mapping[str, Mapping[str, Any]],
    key: str,
    norm_layer: Callable[[int], nn.Module],
) -> Callable[..., nn.Module] | None:
    """``table[name]`` with its config arguments bound: the backbone calls it once per block."""
    if name is None:
        return None
    cls = lookup(table, name, key)
    options = named_args.get(name, {})
    return functools.partial(construct, cls, f"{key}_args.{name}", options=options, offered={"norm_layer": norm_layer})


def _renamed_heads(key: str) -> dict[str, str]:
    """Former head keys -> the error line for a config that still uses one under ``key`` (``model.head``...)."""
    return {
        old: f"{old!r} is now {new!r} ({what}); rename it in {key} and {key}_args"
        for old, (new, what) in RENAMED_HEADS.items()
    }


def build_head(
    name: str,
    args: Mapping[str, Mapping[str, Any]],
    key: str,
    in_channels: tuple[int, ...],
    num_classes: int,
    norm_layer: Callable[[int], nn.Module],
    **defaults: Any,
) -> nn.Module:
    """``HEADS[name]`` with its entry of the per-name ``args`` (``defaults`` fill what it leaves out)."""
    renamed = _renamed_heads(key)
    check_named_args(HEADS, args, f"{key}_args", 2, renamed)
    cls = lookup(HEADS, name, key, renamed)
    options = {**defaults, **args.get(name, {})}
    return construct(
        cls, f"{key}_args.{name}", in_channels, num_classes, options=options, offered={"norm_layer": norm_layer}
    )


def build_model(cfg: Any, *, load_pretrained: bool = True) -> SegmentationModel:
    """Build the segmentor from a ``Config`` (or its ``ModelConfig``).

    ``load_pretrained=False`` skips the backbone's ImageNet weights, e.g. when a full checkpoint
    is loaded right after (evaluation, resume).
    """
    cfg = getattr(cfg, "model", cfg)
    norm_layer = build_norm_layer(cfg.norm, cfg.norm_groups)
    # weights load last, so that a typo in the heads' config fails before a large file is read
    backbone = build_backbone(cfg.backbone, norm_layer, load_pretrained=False)
    stages = backbone.out_channels
    head = build_head(cfg.head, cfg.head_args, "model.head", stages, cfg.num_classes, norm_layer)
    aux_head = None
    if cfg.aux_head is not None:
        # the auxiliary head reads the penultimate stage (SPNet: stage 3) unless its args say otherwise
        aux_head = build_head(
            cfg.aux_head, cfg.aux_head_args, "model.aux_head", stages, cfg.num_classes, norm_layer,
            in_stage=len(stages) - 1,
        )  # fmt: skip
    elif cfg.aux_head_args:
        check_named_args(HEADS, cfg.aux_head_args, "model.aux_head_args", 2, _renamed_heads("model.aux_head"))
    if cfg.backbone.pretrained and load_pretrained:
        logger.info("%s", load_backbone_weights(backbone, cfg.backbone.pretrained))
    return SegmentationModel(backbone, head, aux_head, checkpoint_heads=cfg.checkpoint_heads)
