"""State-dict layouts of other codebases -> ours. Pure functions on dicts of tensors, no file I/O.

Formats:

- ``official-spnet``: a full SPNet from github.com/Andrew-Qibin/SPNet (``pretrained.`` backbone,
  ``head.`` SP head, ``auxlayer.`` FCN head), as saved by its training script or by hand.
- ``encoding-resnet``: PyTorch-Encoding's deep-stem ImageNet ResNets (``resnet50-25c4b509.pth``,
  ``resnet101-2a57e44d.pth``), the initialisation of the official SPNet training.
- ``torchvision-resnet``: torchvision's ImageNet ResNets (7x7 stem).

Our backbone keeps the torchvision/PyTorch-Encoding parameter names, so the two ImageNet formats
only lose their classifier; the official SPNet needs its attention and head modules renamed.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import torch

from .backbones.resnet import STAGE_BLOCKS, resolve_placement

FORMATS = ("official-spnet", "encoding-resnet", "torchvision-resnet")

StateDict = dict[str, torch.Tensor]

# Official name -> ours. Reasoned from the official forward (models/resnet.py SPBlock, models/
# customize.py StripPooling = our MixedPooling, models/spnet.py SPHead, models/fcn.py FCNHead):
#   SPBlock.conv1/bn1 act on pool1 = AdaptiveAvgPool2d((None, 1)), the (H x 1) strip  -> conv_h/bn_h
#   SPBlock.conv2/bn2 act on pool2 = AdaptiveAvgPool2d((1, None)), the (1 x W) strip  -> conv_w/bn_w
#   MPM conv1_1 feeds the pooled-grid path, conv1_2 the strip path; conv2_0 is the full-res 3x3,
#   conv2_1 / conv2_2 follow the 20x20 / 12x12 pools, conv2_3 the (1 x W) strip with a (1, 3)
#   kernel, conv2_4 the (H x 1) strip with a (3, 1) kernel, conv2_5 / conv2_6 fuse the two paths.
#   score_layer / conv5 are Sequential(conv, bn, relu, dropout, conv): indices 0, 1 and 4.
_MPM_PARTS = {
    "conv1_1": "reduce_short",
    "conv1_2": "reduce_long",
    "conv2_0": "short_local",
    "conv2_1": "short_pools.0",
    "conv2_2": "short_pools.1",
    "conv2_3": "long_w",
    "conv2_4": "long_h",
    "conv2_5": "fuse_short",
    "conv2_6": "fuse_long",
    "conv3": "project",
}
_SPM_PARTS = {"conv1": "conv_h", "bn1": "bn_h", "conv2": "conv_w", "bn2": "bn_w", "conv3": "fuse"}

_OFFICIAL_RULES: list[tuple[str, Any]] = [
    (
        r"pretrained\.(layer\d\.\d+)\.spm\.(conv[123]|bn[12])\.(.+)",
        lambda m: f"backbone.{m[1]}.attention.{_SPM_PARTS[m[2]]}.{m[3]}",
    ),
    (r"pretrained\.(.+)", r"backbone.\1"),
    (r"head\.trans_layer\.([01])\.(.+)", r"head.reduce.\1.\2"),
    (
        r"head\.strip_pool(\d+)\.(conv\d_\d|conv3)\.([01])\.(.+)",
        lambda m: f"head.context.{int(m[1]) - 1}.{_MPM_PARTS[m[2]]}.{m[3]}.{m[4]}",
    ),
    (r"head\.score_layer\.([01])\.(.+)", r"head.bottleneck.\1.\2"),
    (r"head\.score_layer\.4\.(.+)", r"head.classifier.\1"),
    (r"auxlayer\.conv5\.([01])\.(.+)", r"aux_head.bottleneck.\1.\2"),
    (r"auxlayer\.conv5\.4\.(.+)", r"aux_head.classifier.\1"),
]


def unwrap_state_dict(obj: Any) -> StateDict:
    """The tensors of a checkpoint: unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` and ``module.``."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("not a state dict: expected a mapping of parameter names to tensors")
    if obj and all(k.startswith("module.") for k in obj):  # saved from (Distributed)DataParallel
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def convert_official_spnet(state_dict: StateDict) -> tuple[StateDict, dict[str, Any]]:
    """Rename an official SPNet state dict to ours; also infer the ``model`` config it needs."""
    converted, unknown = {}, []
    for key, value in state_dict.items():
        for pattern, replacement in _OFFICIAL_RULES:
            match = re.fullmatch(pattern, key)
            if match:
                new_key = replacement(match) if callable(replacement) else match.expand(replacement)
                converted[new_key] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} keys are not part of the official SPNet layout (first: {unknown[:5]}); "
            "is this another architecture's checkpoint?"
        )
    if "backbone.conv1.0.weight" not in converted or "head.classifier.weight" not in converted:
        raise ValueError(
            "not an official SPNet state dict: no 'pretrained.conv1.0.weight' or 'head.score_layer.4.weight'"
        )
    return converted, _infer_official_model_config(converted)


def _infer_official_model_config(sd: StateDict) -> dict[str, Any]:
    layout = describe_resnet(sd, prefix="backbone.")
    num_mpm = len({k.split(".")[2] for k in sd if k.startswith("head.context.")})
    attention_blocks = {tuple(k.split(".")[1:3]) for k in sd if ".attention." in k}  # {("layer1", "2"), ...}
    backbone: dict[str, Any] = {"depth": layout["depth"], "deep_stem": True, "base_width": layout["base_width"]}
    if layout["depth"] is None:
        backbone.update(depth=50 if layout["block"] == "bottleneck" else 18, stage_blocks=layout["stage_blocks"])
    if attention_blocks:
        placement = [sorted(int(i) for layer, i in attention_blocks if layer == f"layer{s}") for s in range(1, 5)]
        official = resolve_placement("official", layout["stage_blocks"])
        backbone.update(
            attention="strip", attention_placement="official" if [set(p) for p in placement] == official else placement
        )
    else:
        backbone.update(attention=None)
    return {
        "num_classes": int(sd["head.classifier.weight"].shape[0]),
        "backbone": backbone,
        "head": "sp",
        # the official grid sizes are fixed
        "head_args": {"sp": {"num_context": num_mpm, "context_args": {"pool_sizes": [20, 12]}}},
        "aux_head": "fcn" if "aux_head.classifier.weight" in sd else None,
    }


def convert_imagenet_resnet(state_dict: StateDict, fmt: str) -> tuple[StateDict, list[str]]:
    """Check the stem matches ``fmt`` and drop the ImageNet classifier. Returns (backbone sd, dropped keys)."""
    if fmt not in ("encoding-resnet", "torchvision-resnet"):
        raise ValueError(f"unknown ImageNet ResNet format {fmt!r}")
    stem = detect_stem(state_dict)
    expected = "deep" if fmt == "encoding-resnet" else "standard"
    if stem != expected:
        other = "encoding-resnet" if stem == "deep" else "torchvision-resnet"
        raise ValueError(
            f"this file has the {stem} stem, which is the '{other}' format, not '{fmt}'"
            if stem
            else "not a ResNet state dict: no 'conv1.weight' (7x7 stem) or 'conv1.0.weight' (deep stem)"
        )
    dropped = sorted(k for k in state_dict if k.startswith("fc."))
    return {k: v for k, v in state_dict.items() if not k.startswith("fc.")}, dropped


def detect_stem(state_dict: StateDict, prefix: str = "") -> str | None:
    """``"deep"`` (three 3x3 convs), ``"standard"`` (one 7x7 conv) or None if neither is present."""
    if prefix + "conv1.0.weight" in state_dict:
        return "deep"
    weight = state_dict.get(prefix + "conv1.weight")
    if weight is not None and weight.dim() == 4 and weight.shape[-1] == 7:
        return "standard"
    return None


def describe_resnet(sd: StateDict, prefix: str = "") -> dict[str, Any]:
    """Blocks per stage, block type, width, stem and the matching standard depth of a ResNet state dict."""
    counts = Counter()
    for key in sd:
        match = re.match(re.escape(prefix) + r"layer(\d)\.(\d+)\.", key)
        if match:
            counts[(int(match[1]), int(match[2]))] += 1
    stage_blocks = tuple(1 + max((b for s, b in counts if s == stage), default=-1) for stage in range(1, 5))
    block = "bottleneck" if prefix + "layer1.0.conv3.weight" in sd else "basic"
    depth = next(
        (
            d
            for d, (cls, blocks) in STAGE_BLOCKS.items()
            if blocks == stage_blocks and (cls.expansion == 4) == (block == "bottleneck")
        ),
        None,
    )
    width_key = prefix + "layer1.0.conv1.weight"
    base_width = int(sd[width_key].shape[0]) if width_key in sd else None
    return {
        "depth": depth,
        "stage_blocks": stage_blocks,
        "block": block,
        "base_width": base_width,
        "stem": detect_stem(sd, prefix),
    }


def describe_layout(layout: dict[str, Any]) -> str:
    """One line, e.g. ``ResNet-101 (blocks 3/4/23/3, bottleneck, width 64, deep stem)``."""
    name = f"ResNet-{layout['depth']}" if layout["depth"] else "ResNet"
    blocks = "/".join(map(str, layout["stage_blocks"]))
    return f"{name} (blocks {blocks}, {layout['block']}, width {layout['base_width']}, {layout['stem']} stem)"
