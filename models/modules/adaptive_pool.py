"""Adaptive average pooling to a fixed grid, written so it exports with a symbolic input size.

``F.adaptive_avg_pool2d(x, n)`` has no ONNX operator (except for n = 1), so ``torch.onnx.export``
decomposes it into gathers over windows whose count and length it fixes from the example input:
at another size the graph reads out of bounds (maps smaller than the example) or averages the
wrong pixels (logits off by ~1e-3 on a tiny SPNet; docs/deploy.md). The same average as two
matrix products does not depend on the size: output cell i of a side of length L averages the
input over ``[floor(i * L / n), ceil((i + 1) * L / n))``, PyTorch's bins, so
``pooled = P_H @ x @ P_W^T`` with P built at run time from ``arange`` (tests/test_export.py:
equal in float64 to ``adaptive_avg_pool2d`` at every size, smaller than n included).

``exportable_pool`` on a module (MPM, PPM) switches it to this form; it is off by default, since
training and eager inference keep PyTorch's kernel. ``engine/export.py`` switches it on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pooling_matrix(length: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """(bins, length): row i averages the input over adaptive pooling's bin i, dtype/device of ``like``."""
    i = torch.arange(bins, device=like.device).unsqueeze(1)  # (bins, 1)
    j = torch.arange(length, device=like.device).unsqueeze(0)  # (1, length)
    start = (i * length) // bins  # floor(i * L / n)
    end = ((i + 1) * length + bins - 1) // bins  # ceil((i + 1) * L / n)
    inside = (j >= start) & (j < end)  # (bins, length)
    return inside.to(like.dtype) / (end - start).to(like.dtype)


def adaptive_avg_pool2d(x: torch.Tensor, size: int | tuple[int, int], exportable: bool = False) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)``; with ``exportable``, as ``P_H @ x @ P_W^T`` (see above)."""
    if not exportable:
        return F.adaptive_avg_pool2d(x, size)
    out_h, out_w = (size, size) if isinstance(size, int) else size
    h, w = x.shape[-2:]
    rows = pooling_matrix(h, out_h, x)  # (out_h, H)
    cols = pooling_matrix(w, out_w, x)  # (out_w, W)
    return rows @ (x @ cols.transpose(0, 1))  # (N, C, H, out_w) -> (N, C, out_h, out_w)


def use_exportable_pooling(model: nn.Module, enabled: bool = True) -> int:
    """Switch every module of ``model`` with an ``exportable_pool`` flag (MPM, PPM); returns how many."""
    switched = 0
    for module in model.modules():
        if hasattr(module, "exportable_pool"):
            module.exportable_pool = enabled
            switched += 1
    return switched
