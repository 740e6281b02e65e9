"""Segmentation heads: ``HEADS[name](in_channels, num_classes, *, norm_layer, **args)`` -> logits.

``in_channels`` are the channels of every backbone stage; a head declares the stages it reads in
``in_stages`` and returns logits at the resolution of the first of them (the segmentor upsamples).
Each paper's head is a subclass of ``ContextHead`` in its own file, whose docstring names the paper
and whose signature holds the structure (C = channels of the input stage; widths are fractions of
C, so the heads fit any backbone):

| key | class | paper | stage 4 (C) -> ... -> dropout 0.1 -> 1x1 classifier |
|---|---|---|---|
| fcn | FCNHead | FCN (SPNet's aux head and "Base FCN") | 3x3 conv to C/4 |
| sp | SPHead | SPNet | 1x1 conv to C/2, MPM, MPM, 3x3 conv to C/4 |
| ppm | PSPHead | PSPNet | PPM (C -> 2C), 3x3 conv to C/4 |
| aspp | ASPPHead | DeepLabV3 | ASPP (-> 256) |
| nonlocal | NonLocalHead | non-local (MMSegmentation NLHead) | 3x3 to C/4, NL, 3x3, concat input, 3x3 to C/4 |
| gc | GCHead | GCNet (MMSegmentation GCHead) | 3x3 to C/4, GC (reduction 4), 3x3, concat input, 3x3 to C/4 |
| cc | CCHead | CCNet RCCA | 3x3 to C/4, CC x 2 (shared), 3x3, concat input, 3x3 to C/4 |
| rfb | RFBHead | RFB (no paper head: ours) | 1x1 conv to C/4, RFB, 3x3 conv to C/4 |
| ssh | SSHHead | SSH (no paper head: ours) | 3x3 conv to C/4, SSH context, 3x3 conv to C/4 |
| spp | SPPHead | YOLOv3-SPP | 1x1 conv to C/4, SPP (-> C), 1x1 conv to C/4 |

Every argument of a head can be set from the config (``model.head_args.<key>.<argument>``), e.g.
``low_level: seb`` to fuse stage-1 features. ``tests/test_heads.py`` parametrizes over ``HEADS``.
"""

from .aspp_head import ASPPHead
from .cc_head import CCHead
from .context_head import ContextHead
from .fcn_head import FCNHead
from .gc_head import GCHead
from .non_local_head import NonLocalHead
from .psp_head import PSPHead
from .rfb_head import RFBHead
from .sp_head import SPHead
from .spp_head import SPPHead
from .ssh_head import SSHHead

HEADS = {
    "fcn": FCNHead,
    "sp": SPHead,
    "ppm": PSPHead,
    "aspp": ASPPHead,
    "nonlocal": NonLocalHead,
    "gc": GCHead,
    "cc": CCHead,
    "rfb": RFBHead,
    "ssh": SSHHead,
    "spp": SPPHead,
}

# Former keys -> (key, what it is): a config that still names one fails with the new key. "mpm" now
# names only the mixed pooling module (a context module: ``context: mpm``).
RENAMED_HEADS = {"mpm": ("sp", "SPNet's SP head")}

__all__ = [
    "HEADS",
    "RENAMED_HEADS",
    "ASPPHead",
    "CCHead",
    "ContextHead",
    "FCNHead",
    "GCHead",
    "NonLocalHead",
    "PSPHead",
    "RFBHead",
    "SPHead",
    "SPPHead",
    "SSHHead",
]
