"""The test protocol: one definition for the config's ``eval`` section, the inference code and the flags.

Published numbers in this field depend on test-time details that differ between codebases. A
``Protocol`` holds the knobs (mode, crop, stride, scales, flip, image size); its profile names the
codebase whose rules apply them, one ``Rules`` object each (``PROFILES``). A new profile is one
new ``Rules`` subclass. The config's ``eval`` section *is* a ``Protocol`` (``utils.config.EvalConfig``
adds the speed settings), and ``eval.py`` / ``scripts/predict.py`` get one flag per field from the
field's own metadata (``utils.cli.add_protocol_flags``), so the three can never drift apart.

=============  =========================  =====================  ===========================
rule           ``spnet`` (official code,   ``encoding``           ``mmseg`` (MMSegmentation
               semseg ``tool/test.py``)    (PyTorch-Encoding      0.x ``MultiScaleFlipAug`` +
                                           ``MultiEvalModule``)   ``aug_test``)
=============  =========================  =====================  ===========================
size at s      long = round(s * base),     long = ceil(s * base), target int(s * resize_to),
               short = round(long * r)     short = int(. + 0.5)   keep-ratio fit, int(. + 0.5)
image resize   bilinear, half-pixel        bilinear, corners      bilinear, half-pixel
pad < crop     centred, mean colour        bottom/right, black    none (smaller window)
stride         ceil(2/3 crop)              int(2/3 crop)          its config's (MMSEG_STRIDES)
edge windows   shifted inside the image    cut, padded (black)    shifted inside the image
window output  softmax                     exp(logits)            logits
flip           per window: mean of the     per window:            per view: flipped image,
               two softmaxes               exp(l + flip(l'))      softmax averaged over views
views          probabilities averaged      exp scores summed      softmax averaged
output resize  bilinear, half-pixel        bilinear, corners      bilinear, half-pixel
=============  =========================  =====================  ===========================

"half-pixel" is cv2.INTER_LINEAR / ``align_corners=False`` without antialiasing; "corners" is
``align_corners=True``. ``whole`` mode runs the model once per view on the resized image, without
padding. Windows are batched ``window_batch`` at a time, which bounds memory at any scale.
``mmseg`` follows MMSegmentation 0.x; 1.x tests one scale the same way, but its multi-scale sizes
differ (docs/evaluation.md). This module does not import torch (the rules use tensor methods), so
reading a config stays light.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .schema import ConfigError, bounded, check_bounds

if TYPE_CHECKING:
    from torch import Tensor

# Sliding-window stride of every MMSegmentation config with ``test_cfg=dict(mode='slide', ...)``, by
# (square) crop; the same in mmsegmentation 0.30.0 and 1.2.2. 64 / 128 / 256: UNet on DRIVE, STARE and
# CHASE_DB1, HRF; 480: PASCAL Context; 512, 640: ADE20K (SETR, ConvNeXt, MAE, BEiT; Segmenter alone
# uses 480 and 608); 768: SETR Cityscapes; 769: Cityscapes; 1024: SegFormer Cityscapes.
MMSEG_STRIDES = {64: 42, 128: 85, 256: 170, 480: 320, 512: 341, 640: 426, 768: 512, 769: 513, 1024: 768}


class Rules:
    """How one codebase tests: image sizes, window layout, padding and score fusion.

    Defaults are the rules the codebases share; each profile overrides what it does differently.
    """

    name: str
    align_corners = False  # of every resize, the image's and the scores'
    default_flip = True  # when eval.flip is null
    flips_views = False  # flip the resized image once per scale (mmseg), not every window
    miou_over_all_classes = True  # how that codebase's evaluation averages class IoUs

    def scaled_size(self, height: int, width: int, scale: float, p: Protocol) -> tuple[int, int]:
        """The (H, W) the image is resized to for the view at ``scale``."""
        raise NotImplementedError

    def size_text(self, p: Protocol) -> str:
        """The image size rule for ``str(protocol)``: the knob this profile reads."""
        return f"long side {p.base_size}" if p.base_size else "at its own size"

    def default_stride(self, crop: tuple[int, int]) -> tuple[int, int] | None:
        """The stride the profile uses for ``crop``; None when it has none (an error to report)."""
        raise NotImplementedError

    def windows(self, height: int, width: int, crop, stride) -> tuple[list[tuple[int, int, int, int]], tuple[int, int]]:
        """Windows (top, left, bottom, right) over a view of (height, width), and the padded view size."""
        raise NotImplementedError

    def pad(self, view: Tensor, padded: tuple[int, int], black: Tensor) -> tuple[Tensor, int, int]:
        """The view on a canvas of the padded size, and its (top, left) there."""
        return view, 0, 0

    def window_input(self, crop: Tensor, size: tuple[int, int], black: Tensor) -> Tensor:
        """What the model sees of a window cut to ``crop`` from a window of ``size``."""
        return crop

    def window_scores(self, logits: Tensor, flipped: bool) -> Tensor:
        """Scores of n windows from their logits, followed (``flipped``) by those of their mirror images."""
        raise NotImplementedError

    def view_scores(self, scores: Tensor) -> Tensor:
        """Scores of a whole view (C, H, W), back at the input size, before views are fused."""
        return scores

    def fuse_views(self, total: Tensor, count: int) -> Tensor:
        """The final scores from the sum of ``count`` views' scores."""
        return total / count


class SPNetRules(Rules):
    """The official SPNet test code (semseg ``tool/test.py``)."""

    name = "spnet"

    def scaled_size(self, height, width, scale, p):
        long_side, short_side = max(height, width), min(height, width)
        new_long = round(scale * (p.base_size or long_side))
        new_short = round(new_long / long_side * short_side)
        return (new_long, new_short) if height > width else (new_short, new_long)

    def default_stride(self, crop):
        return math.ceil(crop[0] * 2 / 3), math.ceil(crop[1] * 2 / 3)

    def windows(self, height, width, crop, stride):
        padded = (max(height, crop[0]), max(width, crop[1]))
        rows, cols = _shifted_spans(padded[0], crop[0], stride[0]), _shifted_spans(padded[1], crop[1], stride[1])
        return _grid(rows, cols), padded

    def pad(self, view, padded, black):  # centred, in the mean colour (0 after normalisation)
        top, left = (padded[0] - view.shape[-2]) // 2, (padded[1] - view.shape[-1]) // 2
        return _on_canvas(view, padded, black.new_zeros(black.shape), top, left), top, left

    def window_scores(self, logits, flipped):
        out = logits.softmax(dim=1)
        n = len(out) // 2
        return (out[:n] + out[n:].flip(-1)) / 2 if flipped else out


class EncodingRules(Rules):
    """PyTorch-Encoding's ``MultiEvalModule``."""

    name = "encoding"
    align_corners = True

    def scaled_size(self, height, width, scale, p):
        long_side, short_side = max(height, width), min(height, width)
        new_long = int(math.ceil((p.base_size or long_side) * scale))
        new_short = int(short_side * new_long / long_side + 0.5)
        return (new_long, new_short) if height > width else (new_short, new_long)

    def default_stride(self, crop):
        return int(crop[0] * 2 / 3), int(crop[1] * 2 / 3)

    def windows(self, height, width, crop, stride):  # the edge windows are cut, then padded to the crop
        padded = (max(height, crop[0]), max(width, crop[1]))
        rows, cols = _cut_spans(padded[0], crop[0], stride[0]), _cut_spans(padded[1], crop[1], stride[1])
        return _grid(rows, cols), padded

    def pad(self, view, padded, black):  # bottom / right, in black, as its ``pad_image``
        return _on_canvas(view, padded, black, 0, 0), 0, 0

    def window_input(self, crop, size, black):
        return _on_canvas(crop, size, black, 0, 0)

    def window_scores(self, logits, flipped):
        n = len(logits) // 2
        return (logits[:n] + logits[n:].flip(-1) if flipped else logits).exp()

    def fuse_views(self, total, count):
        return total  # summed, not averaged


class MMSegRules(Rules):
    """MMSegmentation 0.x (0.30.0, mmcv 1.7): ``MultiScaleFlipAug`` + ``Resize(keep_ratio=True)`` sizes,
    then ``EncoderDecoder.aug_test`` / ``slide_inference`` / ``whole_inference``. 1.x's windows and
    fusion are the same, its ``--tta`` sizes are not (it rounds the target and ignores ``img_scale``)."""

    name = "mmseg"
    default_flip = False
    flips_views = True
    miou_over_all_classes = False

    def scaled_size(self, height, width, scale, p):
        # MultiScaleFlipAug truncates the target scaled by the ratio (img_scale=None: the image's own
        # size); mmcv.rescale_size fits the image into it keeping its ratio, and _scale_size rounds.
        long_side, short_side = p.resize_to or (max(height, width), min(height, width))
        target = int(long_side * scale), int(short_side * scale)
        factor = min(max(target) / max(height, width), min(target) / min(height, width))
        return int(height * factor + 0.5), int(width * factor + 0.5)

    def size_text(self, p):
        return f"resized to {p.resize_to[0]}x{p.resize_to[1]}" if p.resize_to else "at its own size"

    def default_stride(self, crop):
        return (MMSEG_STRIDES[crop[0]],) * 2 if crop[0] == crop[1] and crop[0] in MMSEG_STRIDES else None

    def windows(self, height, width, crop, stride):  # no padding: a view smaller than the crop is one window
        rows, cols = _shifted_spans(height, crop[0], stride[0]), _shifted_spans(width, crop[1], stride[1])
        return _grid(rows, cols), (height, width)

    def window_scores(self, logits, flipped):
        return logits  # views are flipped, never windows

    def view_scores(self, scores):
        return scores.softmax(dim=0)


PROFILES = {rules.name: rules for rules in (SPNetRules(), EncodingRules(), MMSegRules())}


def _starts(size: int, crop: int, stride: int) -> list[int]:
    """Window starts along one side: ceil((size - crop) / stride) + 1 of them, as all three codebases count."""
    return [i * stride for i in range(math.ceil(max(size - crop, 0) / stride) + 1)]


def _shifted_spans(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """Spans along one side, the last shifted back inside (and cut to ``size`` when that is below the crop)."""
    return [(max(min(s + crop, size) - crop, 0), min(s + crop, size)) for s in _starts(size, crop, stride)]


def _cut_spans(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    return [(s, min(s + crop, size)) for s in _starts(size, crop, stride)]


def _grid(rows, cols) -> list[tuple[int, int, int, int]]:
    return [(y0, x0, y1, x1) for y0, y1 in rows for x0, x1 in cols]


def _on_canvas(image: Tensor, size: tuple[int, int], fill: Tensor, top: int, left: int) -> Tensor:
    """``image`` placed at (top, left) on a canvas of ``size`` filled with the colour ``fill`` (1, 3, 1, 1)."""
    height, width = image.shape[-2:]
    if (height, width) == tuple(size):
        return image
    canvas = fill.expand(1, 3, *size).clone()
    canvas[..., top : top + height, left : left + width] = image
    return canvas


def _flag(flag: str, help: str, note: str = "", **argparse: object) -> dict[str, object]:
    """Field metadata: the command-line flag of eval.py / predict.py that sets this field, its help, and
    a note said after the config key (``utils.cli.add_protocol_flags``)."""
    return {"flag": flag, "help": help, "note": note, **argparse}


@dataclass(frozen=True)
class Protocol:
    """How a model is tested. Defaults: the official SPNet test (Cityscapes: long side 2048, 768x768
    sliding window with stride 2/3 of it, single scale, flip). Checked when made, from a config or not."""

    profile: Literal["spnet", "encoding", "mmseg"] = dataclasses.field(
        default="spnet",
        metadata=_flag(
            "--profile",
            "whose resize / window / flip rules to follow: the official SPNet test code, PyTorch-Encoding or "
            "MMSegmentation",
        ),
    )
    mode: Literal["whole", "slide"] = dataclasses.field(
        default="slide", metadata=_flag("--mode", "whole image in one pass, or sliding windows")
    )
    crop_size: tuple[int, int] = bounded(
        (768, 768), min=1, **_flag("--crop", "sliding window size", metavar=("H", "W"))
    )
    # null: the profile's (2/3 of the crop; mmseg: its configs' for the crop); at most the crop (no gaps)
    stride: tuple[int, int] | None = bounded(
        None, min=1, **_flag("--stride", "window stride", "null: the profile's for the crop", metavar=("H", "W"))
    )
    scales: tuple[float, ...] = bounded(
        (1.0,),
        above=0,
        min_items=1,
        hint="e.g. [1.0], or [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] for multi-scale",
        **_flag("--scales", "multi-scale test, e.g. 0.5 0.75 1 1.25"),
    )
    flip: bool | None = dataclasses.field(
        default=None,
        metadata=_flag("--flip", "average with the horizontally flipped image", "null: spnet/encoding flip, mmseg not"),
    )
    base_size: int | None = bounded(
        2048, min=1, **_flag("--base-size", "long side at scale 1.0 (spnet, encoding)", "null: the image's own")
    )
    resize_to: tuple[int, int] | None = bounded(
        None,
        min=1,
        **_flag(
            "--resize-to",
            "mmseg: fit the image into LONG x SHORT keeping its aspect ratio at scale 1.0, as mmseg's img_scale, "
            "e.g. 2048 512 for ADE20K, 2048 1024 for Cityscapes",
            "null: own size",
            metavar=("LONG", "SHORT"),
        ),
    )
    window_batch: int = bounded(
        1, min=1, **_flag("--window-batch", "windows per forward pass (memory)", "x2 with per-window flip")
    )

    def __post_init__(self) -> None:
        """Made in code (the Python API, benchmarks) it is checked as a config's eval section is."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(Protocol)}
        for name, value in values.items():
            check_bounds(Protocol, name, value, name, "protocol")
        self.check_fields(values, "", "protocol")

    @classmethod
    def check_fields(cls, values: Mapping[str, Any], prefix: str, source: str) -> None:
        """What one key's bounds cannot say: windows that leave no gaps, a stride the profile knows."""
        crop, stride = values["crop_size"], values["stride"]
        if stride is not None and any(s > c for s, c in zip(stride, crop)):
            raise ConfigError(
                f"{source}: {prefix}stride = {list(stride)} is larger than {prefix}crop_size = {list(crop)}, so the "
                f"windows would leave pixels out; set a stride <= the crop ({prefix}stride, --stride H W), or "
                f"{prefix}stride=null for the profile's"
            )
        profile = values["profile"]
        if values["mode"] == "slide" and stride is None and PROFILES[profile].default_stride(crop) is None:
            known = ", ".join(f"{c}->{s}" for c, s in MMSEG_STRIDES.items())
            raise ConfigError(
                f"{source}: {profile} has no config with a {crop[0]}x{crop[1]} sliding window to take the stride "
                f"from (crop->stride: {known}); set {prefix}stride or --stride H W"
            )

    @classmethod
    def whole_image(cls) -> Protocol:
        """One forward pass on the image as it is: the fast protocol of validation during training."""
        return cls(mode="whole", flip=False, base_size=None)

    def only(self) -> Protocol:
        """The protocol fields alone (a config's eval section also holds speed settings)."""
        return Protocol(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Protocol)})

    def resolved(self) -> Protocol:
        """The protocol with the profile's defaults written in (flip, stride): what was run."""
        stride = self.strides if self.mode == "slide" else None
        return dataclasses.replace(self.only(), flip=self.uses_flip, stride=stride)

    def __str__(self) -> str:
        """One line, printed with every result so that two numbers are never compared blind."""
        if self.mode == "whole":
            view = "whole image"
        else:
            (ch, cw), (sh, sw) = self.crop_size, self.strides
            view = f"sliding window {ch}x{cw} stride {sh}x{sw}"
        scales = ", ".join(f"{s:g}" for s in self.scales)
        size = self.rules.size_text(self)
        return f"{self.profile} rules, {view}, image {size}, scales {scales}, {'flip' if self.uses_flip else 'no flip'}"

    def slug(self) -> str:
        """A short file-name part that tells protocols apart, e.g. ``spnet_slide768_s1_flip``."""
        view = "whole" if self.mode == "whole" else "slide" + "x".join(dict.fromkeys(map(str, self.crop_size)))
        scales = "s" + "-".join(f"{s:g}" for s in self.scales)
        return f"{self.profile}_{view}_{scales}_{'flip' if self.uses_flip else 'noflip'}"

    @property
    def rules(self) -> Rules:
        return PROFILES[self.profile]

    @property
    def uses_flip(self) -> bool:
        """``flip``, or the profile's default when it is null."""
        return self.flip if self.flip is not None else self.rules.default_flip

    @property
    def strides(self) -> tuple[int, int]:
        return self.stride if self.stride is not None else self.rules.default_stride(self.crop_size)

    def scaled_size(self, height: int, width: int, scale: float) -> tuple[int, int]:
        """The (H, W) the image is resized to for the view at ``scale``."""
        return self.rules.scaled_size(height, width, scale, self)

    def window_grid(self, height: int, width: int) -> tuple[list[tuple[int, int, int, int]], tuple[int, int]]:
        """Windows (top, left, bottom, right) over an image of (height, width) after the profile's
        padding, and the padded size. Windows may end beyond the padded image only in ``encoding``,
        which pads each window to the crop size."""
        return self.rules.windows(height, width, self.crop_size, self.strides)
