"""The segmentor: backbone -> head (+ auxiliary head), logits upsampled to the input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationModel(nn.Module):
    """Runs the backbone, then each head on the backbone stages it declares (``head.in_stages``).

    Returns ``{"out": logits}`` at input resolution, plus ``"aux"`` in training mode when an
    auxiliary head exists (it only feeds the auxiliary loss, so inference skips its cost).
    Upsampling is bilinear with ``align_corners=True``, as in the official SPNet; converted
    official weights give the official logits only with this convention.

    A head that needs other stages (e.g. stage 1 for a low-level fusion) declares them; nothing
    here changes.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, aux_head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)  # stage 1, 2, ...
        outputs = {"out": _upsample(self.head(_select(features, self.head)), size)}
        if self.aux_head is not None and self.training:
            outputs["aux"] = _upsample(self.aux_head(_select(features, self.aux_head)), size)
        return outputs


def _select(features: list[torch.Tensor], head: nn.Module) -> list[torch.Tensor]:
    return [features[stage - 1] for stage in head.in_stages]


def _upsample(logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(logits, size, mode="bilinear", align_corners=True)
