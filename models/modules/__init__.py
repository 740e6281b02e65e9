"""Plug-and-play modules, one concept per file.

Two plain name -> class tables are the extension points:

- ``BLOCK_ATTENTION``: shape-preserving modules inserted into residual blocks of the backbone,
  selected by ``model.backbone.attention``. Constructor: ``cls(in_channels, *, norm_layer, **args)``;
  ``forward(x)`` returns the attended features with the shape of ``x``.
- ``CONTEXT_MODULES``: context aggregators used by heads on the last backbone feature.
  Constructor: ``cls(in_channels, out_channels=None, *, norm_layer, **args)``; the module sets
  ``self.out_channels``.

Adding a module is one new file plus one dict entry; ``tests/test_modules.py`` parametrizes over
both tables, so the new entry is tested for the contract without new test code.
"""

from __future__ import annotations

from .mixed_pooling import MixedPooling
from .strip_pooling import StripPooling

BLOCK_ATTENTION = {
    "strip": StripPooling,
}

CONTEXT_MODULES = {
    "mixed": MixedPooling,
}

__all__ = ["BLOCK_ATTENTION", "CONTEXT_MODULES", "MixedPooling", "StripPooling"]
