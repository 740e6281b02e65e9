"""Backbones: feature extractors that declare ``out_channels`` and ``strides`` of their outputs."""

from .resnet import STAGE_BLOCKS, BasicBlock, Bottleneck, ResNet, resolve_placement

__all__ = ["STAGE_BLOCKS", "BasicBlock", "Bottleneck", "ResNet", "resolve_placement"]
