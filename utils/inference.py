"""Test-time inference under a protocol (``utils/protocol.py``): whole image or sliding window, multi-scale, flip.

``infer`` runs the model on the views and windows the protocol's rules lay out and fuses their
scores as that codebase does; the rules themselves (sizes, windows, padding, fusion) live with the
protocol's definition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

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
    size = p.crop_size if p.mode == "slide" else padded
    total = torch.zeros(num_classes, *padded, device=view.device)
    count = torch.zeros(1, *padded, device=view.device)
    for start in range(0, len(windows), p.window_batch):
        chunk = windows[start : start + p.window_batch]
        out = _window_scores(model, view, chunk, size, p, black, amp_dtype)
        for k, (y0, x0, y1, x1) in enumerate(chunk):
            total[:, y0:y1, x0:x1] += out[k, :, : y1 - y0, : x1 - x0]
            count[:, y0:y1, x0:x1] += 1
    return total / count


def _window_scores(model, view, chunk, size, p: Protocol, black, amp_dtype, top: int = 0) -> torch.Tensor:
    """The scores of one batch of windows ``(y0, x0, y1, x1)`` of ``view``, whose first row is padded row
    ``top`` (``infer_bands`` holds a band of the view), each window's flip added where the rules flip
    windows rather than views. ``_windows`` and ``_ViewStream`` batch through here alike."""
    rules = p.rules
    per_window_flip = p.uses_flip and not rules.flips_views
    batch = torch.cat(
        [rules.window_input(view[..., y0 - top : y1 - top, x0:x1], size, black) for y0, x0, y1, x1 in chunk]
    )
    if per_window_flip:
        batch = torch.cat([batch, batch.flip(-1)])
    with torch.autocast(batch.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(batch)["out"].float()
    return rules.window_scores(logits, per_window_flip)


def tiling_problem(protocol: Protocol, height: int, width: int) -> str | None:
    """Why ``infer_bands`` cannot stream this protocol on an image of (height, width); None when it can.

    Streaming keeps the rows of the image at its own size: a resized view (multi-scale, or a long side
    other than the image's) would need its bands resized exactly as the whole view is, which is not done.
    """
    if protocol.mode != "slide":
        return "tiled inference runs sliding windows; the protocol runs the whole image (use --mode slide)"
    sizes = {protocol.scaled_size(height, width, scale) for scale in protocol.scales}
    if sizes != {(height, width)}:
        return (
            f"tiled inference runs on the image at its own size ({height}x{width}); the protocol resizes it "
            f"({protocol.rules.size_text(protocol)}, scales {', '.join(f'{s:g}' for s in protocol.scales)}); "
            "use one scale, --scales 1, and the image's own size (eval.base_size=null, eval.resize_to=null)"
        )
    return None


@torch.no_grad()
def infer_bands(
    model: nn.Module,
    rows: Callable[[int, int], torch.Tensor],
    height: int,
    width: int,
    protocol: Protocol,
    num_classes: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    amp_dtype: torch.dtype | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """``infer``'s scores band by band, top to bottom: (first row, scores (C, rows, W)), in memory bounded
    by the window height times the width, not by the image's height.

    ``rows(top, bottom)`` gives the normalised rows of the image, (1, 3, bottom - top, W). The windows run
    in ``infer``'s order and batches; a view's window sums and counts are kept only for the rows a later
    window still covers, and a row no later window touches is final: its scores are those ``infer`` gives,
    bit for bit (mmseg's softmax over a view: within 1 ulp, its vectorised loop rounds a band's tail apart).
    Raises ValueError when the protocol cannot be streamed (``tiling_problem``).
    """
    problem = tiling_problem(protocol, height, width)
    if problem:
        raise ValueError(problem)
    p, rules = protocol, protocol.rules
    first = rows(0, min(1, height))  # the device and dtype the rows come in
    black = (-torch.tensor(mean) / torch.tensor(std)).view(1, 3, 1, 1).to(first)
    flips = (False, True) if p.uses_flip and rules.flips_views else (False,)
    views = [_ViewStream(model, rows, height, width, p, num_classes, black, amp_dtype, f) for f in flips]
    done = 0
    while done < height:
        min(views, key=lambda v: v.final).step()  # the view that is behind
        ready = min(v.final for v in views)
        if ready > done:
            scores = torch.zeros(num_classes, ready - done, width, device=first.device)
            for view in views:
                out = rules.view_scores(view.take(done, ready))
                scores += out.flip(-1) if view.flipped else out
            yield done, rules.fuse_views(scores, len(flips))
            done = ready


class _ViewStream:
    """One view's sliding window (``_slide`` / ``_windows``), run a batch of windows at a time, keeping
    the window sums and counts of the rows from the top of the current windows down."""

    def __init__(self, model, rows, height, width, p: Protocol, num_classes, black, amp_dtype, flipped: bool):
        self.model, self.rows, self.p, self.black, self.amp_dtype = model, rows, p, black, amp_dtype
        self.height, self.width, self.num_classes, self.flipped = height, width, num_classes, flipped
        self.windows, self.padded = p.window_grid(height, width)
        self.next = 0  # the first window not yet run
        # A view shorter than the window is padded whole (it is one row of windows); a taller one only
        # sideways, band by band, which places it where padding the whole view would (top 0).
        self.whole = None
        self.top = self.left = 0
        if self.padded[0] != height:
            self.whole, self.top, self.left = p.rules.pad(self._flip(rows(0, height)), self.padded, black)
        self.band, self.band_rows = None, (0, 0)  # the view's rows the current windows read
        self.sums, self.counts, self.start = None, None, 0  # sums and counts of padded rows start...
        self.final = self._frontier()  # image rows above it are final

    def _flip(self, view: torch.Tensor) -> torch.Tensor:
        return view.flip(-1) if self.flipped else view

    def _view(self, top: int, bottom: int) -> torch.Tensor:
        """Padded rows top:bottom of the view (flipped, then padded, as ``infer`` does the whole view)."""
        if self.whole is not None:
            return self.whole[..., top:bottom, :]
        if self.band_rows[0] <= top and bottom <= self.band_rows[1]:
            return self.band[..., top - self.band_rows[0] : bottom - self.band_rows[0], :]
        rows = self._flip(self.rows(top, bottom))
        self.band, _, self.left = self.p.rules.pad(rows, (bottom - top, self.padded[1]), self.black)
        self.band_rows = (top, bottom)
        return self.band

    def _frontier(self) -> int:
        """Image rows above the top of the next window are final (windows are in row-major order)."""
        if self.next == len(self.windows):
            return self.height
        return min(max(self.windows[self.next][0] - self.top, 0), self.height)

    def step(self) -> None:
        """Run the next batch of windows (``_windows``' batches) and add their scores."""
        p = self.p
        chunk = self.windows[self.next : self.next + p.window_batch]
        self.next += len(chunk)
        top, bottom = min(w[0] for w in chunk), max(w[2] for w in chunk)
        view = self._view(top, bottom)
        out = _window_scores(self.model, view, chunk, p.crop_size, p, self.black, self.amp_dtype, top)
        self._grow(bottom, out.device)
        for k, (y0, x0, y1, x1) in enumerate(chunk):
            self.sums[:, y0 - self.start : y1 - self.start, x0:x1] += out[k, :, : y1 - y0, : x1 - x0]
            self.counts[:, y0 - self.start : y1 - self.start, x0:x1] += 1
        self.final = self._frontier()

    def _grow(self, bottom: int, device: torch.device) -> None:
        """Sums and counts down to padded row ``bottom`` (new rows start at zero)."""
        if self.sums is None:
            self.start = self.windows[0][0]
            self.sums = torch.zeros(self.num_classes, 0, self.padded[1], device=device)
            self.counts = torch.zeros(1, 0, self.padded[1], device=device)
        extra = bottom - self.start - self.sums.shape[1]
        if extra > 0:
            self.sums = torch.cat([self.sums, self.sums.new_zeros(self.num_classes, extra, self.padded[1])], 1)
            self.counts = torch.cat([self.counts, self.counts.new_zeros(1, extra, self.padded[1])], 1)

    def take(self, top: int, bottom: int) -> torch.Tensor:
        """The final scores of image rows top:bottom (C, rows, W), dropped from the sums and counts."""
        a, b = top + self.top - self.start, bottom + self.top - self.start  # rows in the sums
        out = self.sums[:, a:b] / self.counts[:, a:b]
        self.sums, self.counts, self.start = self.sums[:, b:], self.counts[:, b:], self.start + b
        return out[:, :, self.left : self.left + self.width]
