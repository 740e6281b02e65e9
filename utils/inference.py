"""Test-time inference: whole image or sliding window, multi-scale, flip, under named protocols.

Published numbers in this field depend on test-time details that differ between codebases. A
``Protocol`` names the codebase whose rules it reproduces; its knobs (mode, crop, stride, scales,
flip, base size) come from the config and the command line.

=============  =========================  =====================  =========================
rule           ``spnet`` (official code,   ``encoding``           ``mmseg``
               semseg ``tool/test.py``)    (PyTorch-Encoding      (MMSegmentation
                                           ``MultiEvalModule``)   ``slide_inference`` + TTA)
=============  =========================  =====================  =========================
size at s      long = round(s * base),     long = ceil(s * base), keep-ratio fit of
               short = round(long * r)     short = int(. + 0.5)   ``resize_to``, times s
image resize   bilinear, half-pixel        bilinear, corners      bilinear, half-pixel
pad < crop     centred, mean colour        bottom/right, black    none (smaller window)
stride         ceil(2/3 crop)              int(2/3 crop)          ceil(2/3 crop)
edge windows   shifted inside the image    cut, padded (black)    shifted inside the image
window output  softmax                     exp(logits)            logits
flip           per window: mean of the     per window:            per view: flipped image,
               two softmaxes               exp(l + flip(l'))      softmax averaged over views
views          probabilities averaged      exp scores summed      softmax averaged
output resize  bilinear, half-pixel        bilinear, corners      bilinear, half-pixel
=============  =========================  =====================  =========================

"half-pixel" is cv2.INTER_LINEAR / ``align_corners=False`` without antialiasing; "corners" is
``align_corners=True``. ``whole`` mode runs the model once per view on the resized image, without
padding. Windows are batched ``window_batch`` at a time, which bounds memory at any scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PROFILES = ("spnet", "encoding", "mmseg")
AMP_DTYPES = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}  # the config's amp values


@dataclass(frozen=True)
class Protocol:
    profile: str = "spnet"
    mode: str = "slide"  # whole | slide
    crop_size: tuple[int, int] = (768, 768)
    stride: tuple[int, int] | None = None  # None: 2/3 of the crop, rounded as the profile rounds
    scales: tuple[float, ...] = (1.0,)
    flip: bool = True
    base_size: int | None = None  # spnet / encoding: long side at scale 1.0; None: the image's own
    resize_to: tuple[int, int] | None = None  # mmseg: (long, short) keep-ratio target; None: own size
    window_batch: int = 1  # windows (with their flips) per forward pass

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown protocol profile {self.profile!r}; choose from {PROFILES}")
        if self.mode not in ("whole", "slide"):
            raise ValueError(f"mode must be 'whole' or 'slide', got {self.mode!r}")

    @classmethod
    def from_config(cls, cfg) -> Protocol:
        """From an ``EvalConfig``; an unset ``flip`` takes the profile's default."""
        flip = cfg.flip if cfg.flip is not None else cfg.profile != "mmseg"
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
        if self.profile == "mmseg":
            size = f"resized to {self.resize_to[0]}x{self.resize_to[1]}" if self.resize_to else "at its own size"
        else:
            size = f"long side {self.base_size}" if self.base_size else "at its own size"
        scales = ", ".join(f"{s:g}" for s in self.scales)
        return f"{self.profile} rules, {view}, image {size}, scales {scales}, {'flip' if self.flip else 'no flip'}"

    @property
    def strides(self) -> tuple[int, int]:
        if self.stride is not None:
            return self.stride
        rounding = int if self.profile == "encoding" else math.ceil
        return rounding(self.crop_size[0] * 2 / 3), rounding(self.crop_size[1] * 2 / 3)

    def scaled_size(self, height: int, width: int, scale: float) -> tuple[int, int]:
        """The (H, W) the image is resized to for the view at ``scale``."""
        long_side, short_side = max(height, width), min(height, width)
        if self.profile == "mmseg":
            factor = scale
            if self.resize_to is not None:
                factor *= min(max(self.resize_to) / long_side, min(self.resize_to) / short_side)
            return int(height * factor + 0.5), int(width * factor + 0.5)
        base = self.base_size or long_side
        if self.profile == "spnet":
            new_long = round(scale * base)
            new_short = round(new_long / long_side * short_side)
        else:  # encoding
            new_long = int(math.ceil(base * scale))
            new_short = int(short_side * new_long / long_side + 0.5)
        return (new_long, new_short) if height > width else (new_short, new_long)


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
    p = protocol
    corners = p.profile == "encoding"  # align_corners of every resize in this profile
    black = (-torch.tensor(mean) / torch.tensor(std)).view(1, 3, 1, 1).to(image)
    views = [(scale, False) for scale in p.scales]
    if p.profile == "mmseg" and p.flip:  # mmseg flips whole views, the others flip every window
        views += [(scale, True) for scale in p.scales]
    scores = torch.zeros(num_classes, height, width, device=image.device)
    for scale, flipped in views:
        size = p.scaled_size(height, width, scale)
        view = image if size == (height, width) else F.interpolate(image, size, mode="bilinear", align_corners=corners)
        view = view.flip(-1) if flipped else view
        if p.mode == "whole":
            out = _windows(model, view, [(0, 0, *size)], size, p, num_classes, black, amp_dtype)
        else:
            out = _slide(model, view, p, num_classes, black, amp_dtype)
        out = out.flip(-1) if flipped else out
        if out.shape[-2:] != (height, width):
            out = F.interpolate(out[None], (height, width), mode="bilinear", align_corners=corners)[0]
        scores += torch.softmax(out, dim=0) if p.profile == "mmseg" else out
    return scores if p.profile == "encoding" else scores / len(views)


def window_grid(height: int, width: int, protocol: Protocol) -> tuple[list[tuple[int, int, int, int]], tuple[int, int]]:
    """Windows (top, left, bottom, right) over an image of (height, width) after the profile's padding,
    and the padded size. Windows may end beyond the padded image only in ``encoding``, which pads
    each window to the crop size."""
    (crop_h, crop_w), (stride_h, stride_w) = protocol.crop_size, protocol.strides
    if protocol.profile == "mmseg":
        padded = (height, width)
        rows = [
            max(min(i * stride_h + crop_h, height) - crop_h, 0)
            for i in range(max(height - crop_h + stride_h - 1, 0) // stride_h + 1)
        ]
        cols = [
            max(min(j * stride_w + crop_w, width) - crop_w, 0)
            for j in range(max(width - crop_w + stride_w - 1, 0) // stride_w + 1)
        ]
        return [(y, x, min(y + crop_h, height), min(x + crop_w, width)) for y in rows for x in cols], padded
    padded = (max(height, crop_h), max(width, crop_w))
    grid_h = math.ceil((padded[0] - crop_h) / stride_h) + 1
    grid_w = math.ceil((padded[1] - crop_w) / stride_w) + 1
    windows = []
    for i in range(grid_h):
        for j in range(grid_w):
            y1, x1 = min(i * stride_h + crop_h, padded[0]), min(j * stride_w + crop_w, padded[1])
            if protocol.profile == "spnet":  # shift the edge windows back inside the image
                windows.append((y1 - crop_h, x1 - crop_w, y1, x1))
            else:  # encoding: cut the edge windows (each is padded to the crop size later)
                windows.append((i * stride_h, j * stride_w, y1, x1))
    return windows, padded


def _pad_amounts(height: int, width: int, padded: tuple[int, int], profile: str) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding of the whole view."""
    pad_h, pad_w = padded[0] - height, padded[1] - width
    if profile == "spnet":  # centred
        return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2
    return 0, pad_w, 0, pad_h


def _slide(model, view, p: Protocol, num_classes: int, black: torch.Tensor, amp_dtype) -> torch.Tensor:
    _, _, height, width = view.shape
    windows, padded = window_grid(height, width, p)
    left, right, top, bottom = _pad_amounts(height, width, padded, p.profile)
    if any((left, right, top, bottom)):
        # spnet pads with the mean colour (0 after normalisation), encoding with black
        fill = torch.zeros_like(black) if p.profile == "spnet" else black
        canvas = fill.expand(1, 3, *padded).clone()
        canvas[..., top : top + height, left : left + width] = view
        view = canvas
    out = _windows(model, view, windows, padded, p, num_classes, black, amp_dtype)
    return out[:, top : top + height, left : left + width]


def _windows(model, view, windows, padded, p: Protocol, num_classes: int, black, amp_dtype) -> torch.Tensor:
    """Run the model on the windows, ``window_batch`` at a time; average the outputs where windows overlap."""
    crop_h, crop_w = p.crop_size if p.mode == "slide" else padded
    total = torch.zeros(num_classes, *padded, device=view.device)
    count = torch.zeros(1, *padded, device=view.device)
    per_window_flip = p.flip and p.profile != "mmseg"
    for start in range(0, len(windows), p.window_batch):
        chunk = windows[start : start + p.window_batch]
        crops = []
        for y0, x0, y1, x1 in chunk:
            crop = view[..., y0:y1, x0:x1]
            if p.profile == "encoding" and (y1 - y0, x1 - x0) != (crop_h, crop_w):
                canvas = black.expand(1, 3, crop_h, crop_w).clone()
                canvas[..., : y1 - y0, : x1 - x0] = crop
                crop = canvas
            crops.append(crop)
        batch = torch.cat(crops)
        if per_window_flip:
            batch = torch.cat([batch, batch.flip(-1)])
        with torch.autocast(view.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(batch)["out"].float()
        n = len(chunk)
        if p.profile == "spnet":
            out = torch.softmax(logits, dim=1)
            out = (out[:n] + out[n:].flip(-1)) / 2 if per_window_flip else out
        elif p.profile == "encoding":
            out = (logits[:n] + logits[n:].flip(-1) if per_window_flip else logits).exp()
        else:
            out = logits
        for k, (y0, x0, y1, x1) in enumerate(chunk):
            total[:, y0:y1, x0:x1] += out[k, :, : y1 - y0, : x1 - x0]
            count[:, y0:y1, x0:x1] += 1
    return total / count
