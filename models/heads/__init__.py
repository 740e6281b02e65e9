"""Segmentation heads: ``HEADS[name](in_channels, num_classes, *, norm_layer, **args)`` -> logits.

``in_channels`` are the channels of every backbone stage; a head declares the stages it reads in
``in_stages`` and returns logits at the resolution of the first of them (the segmentor upsamples).
Every entry is the generic ``ContextHead`` with one paper's structure preset (C = channels of
the input stage; widths are fractions of C, so the presets fit any backbone):

| key | paper | reduce | context | after the context | bottleneck |
|---|---|---|---|---|---|
| fcn | FCN (SPNet aux / "Base FCN") | - | - | - | 3x3 -> C/4 |
| mpm | SPNet SP head | 1x1 -> C/2 | 2 x MPM | - | 3x3 -> C/4 |
| ppm | PSPNet | - | PPM (-> 2C) | - | 3x3 -> C/4 |
| aspp | DeepLabV3 | - | ASPP (-> 256) | - | - |
| nonlocal | non-local (mmseg NLHead) | 3x3 -> C/4 | NL | 3x3, concat input | 3x3 -> C/4 |
| gc | GCNet (mmseg GCHead) | 3x3 -> C/4 | GC (ratio 1/4) | 3x3, concat input | 3x3 -> C/4 |
| cc | CCNet RCCA | 3x3 -> C/4 | CC (recurrence 2) | 3x3, concat input | 3x3 -> C/4 |
| rfb | RFB (no paper head: ours) | 1x1 -> C/4 | RFB | - | 3x3 -> C/4 |
| ssh | SSH (no paper head: ours) | 3x3 -> C/4 | SSH context | - | 3x3 -> C/4 |
| spp | YOLOv3-SPP | 1x1 -> C/4 | SPP (-> C) | - | 1x1 -> C/4 |

All end with Dropout2d(0.1) and a 1x1 classifier; any preset argument can be overridden from the
config (``model.head_args.<key>.<argument>``), e.g. ``low_level: seb`` to fuse stage-1 features.
``tests/test_heads.py`` parametrizes over this table.
"""

from functools import partial

from .context_head import ContextHead

_CONCAT = {"reduce": "3x3", "post_conv": True, "concat_input": True}  # mmseg NLHead / GCHead, CCNet RCCA

HEADS = {
    "fcn": ContextHead,
    "mpm": partial(ContextHead, context="mpm", num_context=2, reduce="1x1", reduce_channels=0.5),
    "ppm": partial(ContextHead, context="ppm"),
    "aspp": partial(ContextHead, context="aspp", bottleneck=None),
    "nonlocal": partial(ContextHead, context="nonlocal", **_CONCAT),
    "gc": partial(ContextHead, context="gc", context_args={"reduction": 4}, **_CONCAT),
    "cc": partial(ContextHead, context="cc", **_CONCAT),
    "rfb": partial(ContextHead, context="rfb", reduce="1x1"),
    "ssh": partial(ContextHead, context="ssh", reduce="3x3"),
    "spp": partial(ContextHead, context="spp", reduce="1x1", bottleneck=1),
}

__all__ = ["HEADS", "ContextHead"]
