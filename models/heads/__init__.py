"""Segmentation heads: ``cls(in_channels, num_classes, *, norm_layer, **args)`` -> logits at feature size.

``HEADS`` is the table ``model.head`` and ``model.aux_head`` pick from; a new head is one file
plus one entry, and ``tests/test_heads.py`` checks every entry for the shape contract.
"""

from .fcn_head import FCNHead
from .spnet_head import SPNetHead

HEADS = {
    "fcn": FCNHead,
    "spnet": SPNetHead,
}

__all__ = ["HEADS", "FCNHead", "SPNetHead"]
