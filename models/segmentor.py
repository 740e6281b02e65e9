"""The segmentor: backbone -> head (+ auxiliary head), logits upsampled to the input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .recompute import recomputed, should_recompute


class SegmentationModel(nn.Module):
    """Runs the backbone, then each head on the backbone stages it declares (``head.in_stages``).

    Returns ``{"out": logits}`` at input resolution, plus ``"aux"`` in training mode when an
    auxiliary head exists (it only feeds the auxiliary loss, so inference skips its cost).
    Upsampling is bilinear with ``align_corners=True``, as in the official SPNet; converted
    official weights give the official logits only with this convention.

    A head that needs other stages (e.g. stage 1 for a low-level fusion) declares them; nothing
    here changes. ``checkpoint_heads``: in training, the head and the aux head keep only their
    inputs and run again in the backward pass (activation checkpointing, ``models/recompute.py``).
    """

    def __init__(
        self, backbone: nn.Module, head: nn.Module, aux_head: nn.Module | None = None, *, checkpoint_heads: bool = False
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        self.checkpoint_heads = checkpoint_heads

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)  # stage 1, 2, ...
        outputs = {"out": _upsample(self._run(self.head, _select(features, self.head)), size)}
        if self.aux_head is not None and self.training:
            outputs["aux"] = _upsample(self._run(self.aux_head, _select(features, self.aux_head)), size)
        return outputs

    def classifier_layers(self) -> dict[str, nn.Module]:
        """The final conv of each head (one output channel per class), by state-dict prefix, as each head
        names it (``classifier_layer``): ``{"head.classifier": ..., "aux_head.classifier": ...}``."""
        heads = {"head": self.head, "aux_head": self.aux_head}
        return {
            f"{name}.{head.classifier_layer}": head.get_submodule(head.classifier_layer)
            for name, head in heads.items()
            if head is not None
        }

    def _run(self, head: nn.Module, features: list[torch.Tensor]) -> torch.Tensor:
        if self.checkpoint_heads and should_recompute(self):
            return recomputed(head, features)
        return head(features)


def _select(features: list[torch.Tensor], head: nn.Module) -> list[torch.Tensor]:
    return [features[stage - 1] for stage in head.in_stages]


def _upsample(logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(logits, size, mode="bilinear", align_corners=True)
