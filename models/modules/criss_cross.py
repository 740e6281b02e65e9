"""Criss-cross attention (CCA), applied recurrently (RCCA).

Paper: Huang, Wang, Huang, Huang, Wei, Liu, "CCNet: Criss-Cross Attention for Semantic Segmentation",
ICCV 2019, https://arxiv.org/abs/1811.11721 (official code: https://github.com/speedinghzl/CCNet).

Choices: pure torch (two einsums, i.e. batched matmuls) instead of the official CUDA extension; same
maths, parameter names as the official module (``query_conv``, ``key_conv``, ``value_conv``, ``gamma``)
and PyTorch's default initialisation as there. Note that ``key_conv.bias`` is kept as in the paper but
can never change the output (it shifts all energies of a query by the same amount), so its gradient is 0.
"""

from __future__ import annotations

import torch
from torch import nn


class CrissCrossAttention(nn.Module):
    """Each position attends to its row and its column (H + W - 1 positions, itself once).

    One pass gives every position the context of its criss-cross path; ``recurrence`` passes with
    shared weights (2 in the paper) let information reach every position from every other one, at a
    cost of (H + W - 1) * H * W scores per pass instead of (H * W)^2 for a non-local block.
    ``y = gamma * attention(x) + x`` with ``gamma`` initialised to 0, so the module starts as the identity.
    """

    def __init__(self, in_channels: int, *, reduction: int = 8, recurrence: int = 2) -> None:
        super().__init__()
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"reduction must be an int >= 1 (query/key width is C // reduction), got {reduction!r}")
        if not isinstance(recurrence, int) or recurrence < 1:
            raise ValueError(f"recurrence must be an int >= 1 (number of shared-weight passes), got {recurrence!r}")
        self.out_channels = in_channels
        self.recurrence = recurrence
        inner = max(1, in_channels // reduction)
        self.query_conv = nn.Conv2d(in_channels, inner, 1)
        self.key_conv = nn.Conv2d(in_channels, inner, 1)
        self.value_conv = nn.Conv2d(in_channels, in_channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax over [column (H), row (W)] energies, shape (N, H, W, H + W)."""
        q, k = self.query_conv(x), self.key_conv(x)  # (N, C', H, W)
        h = x.shape[2]
        e_col = torch.einsum("nciw,ncjw->nwij", q, k)  # (N, W, H, H): query row i, key row j, same column
        # The position itself is already in its row; -inf here counts it once. The row part always holds
        # that finite self entry, so no softmax row is all -inf (H = 1 or W = 1 included).
        e_col = e_col.masked_fill(torch.eye(h, dtype=torch.bool, device=x.device), float("-inf"))
        e_row = torch.einsum("nchi,nchj->nhij", q, k)  # (N, H, W, W): query column i, key column j, same row
        energy = torch.cat([e_col.permute(0, 2, 1, 3), e_row], dim=3)  # (N, H, W, H + W)
        return torch.softmax(energy, dim=3)

    def _cca(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        attn = self._attention(x)  # (N, H, W, H + W)
        v = self.value_conv(x)  # (N, C, H, W)
        out_col = torch.einsum("nhwj,ncjw->nchw", attn[..., :h], v)  # (N, C, H, W), sum over the column
        out_row = torch.einsum("nhwj,nchj->nchw", attn[..., h:], v)  # (N, C, H, W), sum over the row
        return self.gamma * (out_col + out_row) + x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.recurrence):
            x = self._cca(x)  # reassign: pass r + 1 attends over pass r's output
        return x
