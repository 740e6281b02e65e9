"""Test-time inference: whole image or sliding window, multi-scale, flip, under named protocols.

Published numbers in this field depend on test-time details that differ between codebases. A
``Protocol`` holds the knobs (mode, crop, stride, scales, flip, image size) from the config and the
command line; its profile names the codebase whose rules apply them, one ``Rules`` object each
(``PROFILES``). A new profile is one new ``Rules`` subclass.

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
differ (docs/evaluation.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

AMP_DTYPES = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}  # the config's amp values

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

    def default_stride(self, crop: tuple[int, int]) -> tuple[int, int]:
        raise NotImplementedError

    def windows(self, height: int, width: int, crop, stride) -> tuple[list[tuple[int, int, int, int]], tuple[int, int]]:
        """Windows (top, left, bottom, right) over a view of (height, width), and the padded view size."""
        raise NotImplementedError

    def pad(self, view: torch.Tensor, padded: tuple[int, int], black: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """The view on a canvas of the padded size, and its (top, left) there."""
        return view, 0, 0

    def window_input(self, crop: torch.Tensor, size: tuple[int, int], black: torch.Tensor) -> torch.Tensor:
        """What the model sees of a window cut to ``crop`` from a window of ``size``."""
        return crop

    def window_scores(self, logits: torch.Tensor, flipped: bool) -> torch.Tensor:
        """Scores of n windows from their logits, followed (``flipped``) by those of their mirror images."""
        raise NotImplementedError

    def view_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores of a whole view (C, H, W), back at the input size, before views are fused."""
        return scores

    def fuse_views(self, total: torch.Tensor, count: int) -> torch.Tensor:
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
        return _on_canvas(view, padded, torch.zeros_like(black), top, left), top, left

    def window_scores(self, logits, flipped):
        out = torch.softmax(logits, dim=1)
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
        if crop[0] != crop[1] or crop[0] not in MMSEG_STRIDES:
            known = ", ".join(f"{c}->{s}" for c, s in MMSEG_STRIDES.items())
            raise ValueError(
                f"mmseg has no config with a {crop[0]}x{crop[1]} sliding window to take the stride from "
                f"(crop->stride: {known}); set eval.stride or --stride H W"
            )
        return MMSEG_STRIDES[crop[0]], MMSEG_STRIDES[crop[1]]

    def windows(self, height, width, crop, stride):  # no padding: a view smaller than the crop is one window
        rows, cols = _shifted_spans(height, crop[0], stride[0]), _shifted_spans(width, crop[1], stride[1])
        return _grid(rows, cols), (height, width)

    def window_scores(self, logits, flipped):
        return logits  # views are flipped, never windows

    def view_scores(self, scores):
        return torch.softmax(scores, dim=0)


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


def _on_canvas(image: torch.Tensor, size: tuple[int, int], fill: torch.Tensor, top: int, left: int) -> torch.Tensor:
    """``image`` placed at (top, left) on a canvas of ``size`` filled with the colour ``fill``."""
    height, width = image.shape[-2:]
    if (height, width) == tuple(size):
        return image
    canvas = fill.expand(1, 3, *size).clone()
    canvas[..., top : top + height, left : left + width] = image
    return canvas


@dataclass(frozen=True)
class Protocol:
    profile: str = "spnet"
    mode: str = "slide"  # whole | slide
    crop_size: tuple[int, int] = (768, 768)
    stride: tuple[int, int] | None = None  # None: the profile's default for the crop
    scales: tuple[float, ...] = (1.0,)
    flip: bool = True
    base_size: int | None = None  # spnet / encoding: long side at scale 1.0; None: the image's own
    resize_to: tuple[int, int] | None = None  # mmseg: (long, short) keep-ratio target; None: own size
    window_batch: int = 1  # windows (with their flips) per forward pass

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown protocol profile {self.profile!r}; choose from {tuple(PROFILES)}")
        if self.mode not in ("whole", "slide"):
            raise ValueError(f"mode must be 'whole' or 'slide', got {self.mode!r}")
        sizes = (*self.crop_size, *(self.stride or ()), self.window_batch)
        if not self.scales or min(self.scales) <= 0 or min(sizes) < 1:  # eval.py checks these as config keys
            raise ValueError(
                f"a protocol needs at least one scale, all > 0, and a crop, stride and window batch >= 1; got {self!r}"
            )
        if self.mode == "slide" and self.stride is None:
            self.rules.default_stride(self.crop_size)  # a crop the profile has no stride for fails now

    @classmethod
    def from_config(cls, cfg) -> Protocol:
        """From an ``EvalConfig``; an unset ``flip`` takes the profile's default."""
        flip = cfg.flip if cfg.flip is not None else PROFILES[cfg.profile].default_flip
        return cls(
            profile=cfg.profile, mode=cfg.mode, crop_size=tuple(cfg.crop_size),
            stride=tuple(cfg.stride) if cfg.stride else None, scales=tuple(cfg.scales), flip=flip,
            base_size=cfg.base_size, resize_to=tuple(cfg.resize_to) if cfg.resize_to else None,
            window_batch=cfg.window_batch,
        )  # fmt: skip

    @classmethod
    def whole_image(cls) -> Protocol:
        """One forward pass on the image as it is: the fast protocol of validation during training."""
        return cls(mode="whole", flip=False, base_size=None)

    def __str__(self) -> str:
        """One line, printed with every result so that two numbers are never compared blind."""
        if self.mode == "whole":
            view = "whole image"
        else:
            (ch, cw), (sh, sw) = self.crop_size, self.strides
            view = f"sliding window {ch}x{cw} stride {sh}x{sw}"
        scales = ", ".join(f"{s:g}" for s in self.scales)
        size = self.rules.size_text(self)
        return f"{self.profile} rules, {view}, image {size}, scales {scales}, {'flip' if self.flip else 'no flip'}"

    @property
    def rules(self) -> Rules:
        return PROFILES[self.profile]

    @property
    def strides(self) -> tuple[int, int]:
        return self.stride if self.stride is not None else self.rules.default_stride(self.crop_size)

    def scaled_size(self, height: int, width: int, scale: float) -> tuple[int, int]:
        """The (H, W) the image is resized to for the view at ``scale``."""
        return self.rules.scaled_size(height, width, scale, self)


@torch.no_grad()
def infer(
    model: nn.Module,
    image: torch.Tensor,
    protocol: Protocol,
    num_classes: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Fused class scores (C, H, W) of one normalised image (1, 3, H, W); argmax gives the prediction."""
    _, _, height, width = image.shape
    p, rules = protocol, protocol.rules
    black = (-torch.tensor(mean) / torch.tensor(std)).view(1, 3, 1, 1).to(image)
    flips = (False, True) if p.flip and rules.flips_views else (False,)
    scores = torch.zeros(num_classes, height, width, device=image.device)
    for scale in p.scales:
        size = p.scaled_size(height, width, scale)
        resized = (
            image
            if size == (height, width)
            else F.interpolate(image, size, mode="bilinear", align_corners=rules.align_corners)
        )
        for flipped in flips:  # mmseg's order: resize, flip, infer, resize back, softmax, flip back
            view = resized.flip(-1) if flipped else resized
            if p.mode == "whole":
                out = _windows(model, view, [(0, 0, *size)], size, p, num_classes, black, amp_dtype)
            else:
                out = _slide(model, view, p, num_classes, black, amp_dtype)
            if out.shape[-2:] != (height, width):
                out = F.interpolate(out[None], (height, width), mode="bilinear", align_corners=rules.align_corners)[0]
            out = rules.view_scores(out)
            scores += out.flip(-1) if flipped else out
    return rules.fuse_views(scores, len(p.scales) * len(flips))


def window_grid(height: int, width: int, protocol: Protocol) -> tuple[list[tuple[int, int, int, int]], tuple[int, int]]:
    """Windows (top, left, bottom, right) over an image of (height, width) after the profile's padding,
    and the padded size. Windows may end beyond the padded image only in ``encoding``, which pads
    each window to the crop size."""
    return protocol.rules.windows(height, width, protocol.crop_size, protocol.strides)


def _slide(model, view, p: Protocol, num_classes: int, black: torch.Tensor, amp_dtype) -> torch.Tensor:
    _, _, height, width = view.shape
    windows, padded = window_grid(height, width, p)
    view, top, left = p.rules.pad(view, padded, black)
    out = _windows(model, view, windows, padded, p, num_classes, black, amp_dtype)
    return out[:, top : top + height, left : left + width]


def _windows(model, view, windows, padded, p: Protocol, num_classes: int, black, amp_dtype) -> torch.Tensor:
    """Run the model on the windows, ``window_batch`` at a time; average the outputs where windows overlap."""
    rules = p.rules
    size = p.crop_size if p.mode == "slide" else padded
    total = torch.zeros(num_classes, *padded, device=view.device)
    count = torch.zeros(1, *padded, device=view.device)
    per_window_flip = p.flip and not rules.flips_views
    for start in range(0, len(windows), p.window_batch):
        chunk = windows[start : start + p.window_batch]
        batch = torch.cat([rules.window_input(view[..., y0:y1, x0:x1], size, black) for y0, x0, y1, x1 in chunk])
        if per_window_flip:
            batch = torch.cat([batch, batch.flip(-1)])
        with torch.autocast(view.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(batch)["out"].float()
        out = rules.window_scores(logits, per_window_flip)
        for k, (y0, x0, y1, x1) in enumerate(chunk):
            total[:, y0:y1, x0:x1] += out[k, :, : y1 - y0, : x1 - x0]
            count[:, y0:y1, x0:x1] += 1
    return total / count
