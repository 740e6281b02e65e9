"""Global Context (GC) block of GCNet: one attention-pooled context vector per image, fused into every position.

Paper: Cao, Xu, Lin, Wei, Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
ICCV Workshops 2019, https://arxiv.org/abs/1904.11492. Official code: https://github.com/xvjiarui/GCNet.
Choices: structure and initialisation follow the official ``ContextBlock`` (the survey omits the
initialisation): He-normal (fan_in) mask conv with zero bias, and the last conv of each transform at zero,
so with the default ``add`` fusion the block is the identity at init. With ``mul`` the official init starts
the block at ``0.5 * x`` (sigmoid(0)); we keep that. Hidden width ``P = max(1, C // reduction)``; note that
with ``P = 1`` the LayerNorm output is constant, so the transform degenerates to a learned bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_POOLINGS = ("att", "avg")
_FUSIONS = ("add", "mul")


def _transform(channels: int, hidden: int) -> nn.Sequential:
    # LayerNorm over (P, 1, 1) normalises the bottleneck without depending on the batch size.
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 1), nn.LayerNorm([hidden, 1, 1]), nn.ReLU(), nn.Conv2d(hidden, channels, 1)
    )


class GlobalContext(nn.Module):
    """``y = x * sigmoid(T_mul(ctx)) + T_add(ctx)`` (terms present per ``fusions``), ctx of shape (B, C, 1, 1).

    ``ctx`` is a softmax-weighted sum over all H*W positions (``pooling="att"``, weights from a 1x1
    conv) or their plain mean (``"avg"``). Every position receives the same context, so the ``add``
    term shifts each channel by a constant over H x W.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        reduction: int = 16,
        pooling: str = "att",
        fusions: Sequence[str] = ("add",),
    ) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1 (hidden width C // reduction; paper: 16), got {reduction}")
        if pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {_POOLINGS}, got {pooling!r}")
        if isinstance(fusions, str) or not fusions or any(f not in _FUSIONS for f in fusions):
            raise ValueError(f"fusions must be a non-empty list drawn from {_FUSIONS}, e.g. ['add'], got {fusions!r}")
        if len(set(fusions)) != len(fusions):
            raise ValueError(f"fusions must not repeat a name, got {fusions!r}")
        self.out_channels = in_channels
        self.pooling = pooling
        self.fusions = tuple(fusions)  # configs give YAML lists
        hidden = max(1, in_channels // reduction)
        self.conv_mask = nn.Conv2d(in_channels, 1, 1) if pooling == "att" else None
        self.transform_mul = _transform(in_channels, hidden) if "mul" in fusions else None
        self.transform_add = _transform(in_channels, hidden) if "add" in fusions else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.conv_mask is not None:
            nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.conv_mask.bias)
        for transform in (self.transform_mul, self.transform_add):
            if transform is not None:
                transform[0].reset_parameters()
                transform[1].reset_parameters()
                nn.init.zeros_(transform[-1].weight)  # identity (add) at init, as in the official code
                nn.init.zeros_(transform[-1].bias)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled global context, shape (B, C, 1, 1)."""
        if self.conv_mask is None:
            return x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        b, c = x.shape[:2]
        weights = torch.softmax(self.conv_mask(x).flatten(2), dim=-1)  # (B, 1, HW), sums to 1 over HW
        return torch.bmm(x.flatten(2), weights.transpose(1, 2)).view(b, c, 1, 1)  # (B, C, HW) @ (B, HW, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context(x)
        out = x
        if self.transform_mul is not None:
            out = out * torch.sigmoid(self.transform_mul(ctx))  # (B, C, H, W) * (B, C, 1, 1)
        if self.transform_add is not None:
            out = out + self.transform_add(ctx)  # (B, C, H, W) + (B, C, 1, 1)
        return out
