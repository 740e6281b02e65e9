"""Test-time inference under a protocol (``utils/protocol.py``): whole image or sliding window, multi-scale, flip.

``infer`` runs the model on the views and windows the protocol's rules lay out and fuses their
scores as that codebase does; the rules themselves (sizes, windows, padding, fusion) live with the
protocol's definition.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .protocol import Protocol

AMP_DTYPES = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}  # the config's amp values


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
    flips = (False, True) if p.uses_flip and rules.flips_views else (False,)
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


def _slide(model, view, p: Protocol, num_classes: int, black: torch.Tensor, amp_dtype) -> torch.Tensor:
    _, _, height, width = view.shape
    windows, padded = p.window_grid(height, width)
    view, top, left = p.rules.pad(view, padded, black)
    out = _windows(model, view, windows, padded, p, num_classes, black, amp_dtype)
    return out[:, top : top + height, left : left + width]


def _windows(model, view, windows, padded, p: Protocol, num_classes: int, black, amp_dtype) -> torch.Tensor:
    """Run the model on the windows, ``window_batch`` at a time; average the outputs where windows overlap."""
    rules = p.rules
    size = p.crop_size if p.mode == "slide" else padded
    total = torch.zeros(num_classes, *padded, device=view.device)
    count = torch.zeros(1, *padded, device=view.device)
    per_window_flip = p.uses_flip and not rules.flips_views
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
