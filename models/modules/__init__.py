"""Plug-and-play modules, one concept per file; ``docs/modules.md`` defines each one and what its tests pin.

Every module takes ``in_channels`` first, options keyword-only, and sets ``self.out_channels``.
Four plain name -> class tables are the extension points; each is selected by one config key and
``tests/test_modules.py`` parametrizes over all of them (a new entry is tested with no new code):

- ``BLOCK_ATTENTION`` (``model.backbone.attention``): shape-preserving modules inside residual
  blocks, ``cls(channels, **args)``.
- ``CONTEXT_MODULES`` (``model.head``, ``model.head_args.<head>.context``): context aggregators
  of the generic head, ``cls(width, **args)``; ``out_channels`` may differ from the input.
- ``BLOCK_CONVS`` (``model.backbone.block_conv``): replacements for the 3x3 conv of residual
  blocks, ``cls(in, out, *, stride, dilation, **args)`` with the dense conv's output size;
  ``normalizes_output`` says whether the block drops its own norm after it, ``DENSE_ALIASES``
  where a pretrained dense conv (and norm) can initialise it.
- ``LOW_LEVEL_FUSIONS`` (``model.head_args.<head>.low_level``): ``cls(in, out, *, low_channels)``,
  ``forward(high, low)`` at the low-level resolution.

Builders pass ``norm_layer`` to the classes whose signature has it. Not in a table:
``BlazeBlock`` (no dilation, a poor fit for a dilated ResNet), and the deploy-time
``fold_model`` / ``fold_conv_bn`` (``conv_bn_folding.py``, used by ``eval.py --fuse``), and
``StripConv`` (``strip_conv.py``), the strip convs of SPM and MPM with their CPU fast path, and
``pool_strips`` / ``broadcast_strips`` (``strips.py``), their pooling and broadcasting, likewise,
and ``adaptive_pool.py``, the export form of the MPM's and PPM's pooling grids (engine/export.py).
"""

from __future__ import annotations

from .acnet import ACBlock
from .adaptive_pool import adaptive_avg_pool2d, use_exportable_pooling
from .aspp import ASPP
from .bam import BAM
from .blaze_block import BlazeBlock
from .cbam import CBAM
from .conv_bn_folding import fold_conv_bn, fold_model
from .criss_cross import CrissCrossAttention
from .cross_channel_pooling import CrossChannelPool
from .depthwise_separable import DepthwiseSeparableConv
from .global_context import GlobalContext
from .mixconv import MixConv
from .mixed_pooling import MixedPooling
from .non_local import NonLocal2d
from .pyramid_pooling import PyramidPooling
from .rfb import RFB, RFBSmall
from .scse import SCSE
from .se import SqueezeExcitation
from .seb import SemanticEmbeddingBranch
from .selective_kernel import SelectiveKernelConv
from .split_attention import SplitAttentionConv
from .spp import SPP
from .ssh import SSHContext
from .strip_conv import StripConv
from .strip_pooling import StripPooling
from .strips import broadcast_strips, pool_strips

BLOCK_ATTENTION = {
    "strip": StripPooling,
    "se": SqueezeExcitation,
    "cbam": CBAM,
    "scse": SCSE,
    "bam": BAM,
    "gc": GlobalContext,
}

CONTEXT_MODULES = {
    "mpm": MixedPooling,
    "ppm": PyramidPooling,
    "aspp": ASPP,
    "nonlocal": NonLocal2d,
    "gc": GlobalContext,
    "cc": CrissCrossAttention,
    "rfb": RFB,
    "rfb_s": RFBSmall,
    "ssh": SSHContext,
    "spp": SPP,
}

BLOCK_CONVS = {
    "sk": SelectiveKernelConv,
    "split_attention": SplitAttentionConv,
    "acnet": ACBlock,
    "mixconv": MixConv,
    "dwsep": DepthwiseSeparableConv,
}

LOW_LEVEL_FUSIONS = {
    "seb": SemanticEmbeddingBranch,
}

__all__ = [
    "ASPP",
    "BAM",
    "BLOCK_ATTENTION",
    "BLOCK_CONVS",
    "CBAM",
    "CONTEXT_MODULES",
    "LOW_LEVEL_FUSIONS",
    "RFB",
    "SCSE",
    "SPP",
    "ACBlock",
    "BlazeBlock",
    "CrissCrossAttention",
    "CrossChannelPool",
    "DepthwiseSeparableConv",
    "GlobalContext",
    "MixConv",
    "MixedPooling",
    "NonLocal2d",
    "PyramidPooling",
    "RFBSmall",
    "SSHContext",
    "SemanticEmbeddingBranch",
    "SelectiveKernelConv",
    "SplitAttentionConv",
    "SqueezeExcitation",
    "StripConv",
    "StripPooling",
    "adaptive_avg_pool2d",
    "broadcast_strips",
    "fold_conv_bn",
    "fold_model",
    "pool_strips",
    "use_exportable_pooling",
]
