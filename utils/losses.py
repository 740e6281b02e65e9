"""The training criterion: pixel-wise cross-entropy (or OHEM) on the main output + 0.4 x on the aux output.

Losses are normalised by the number of labelled pixels of the whole *step* (all micro-batches of
gradient accumulation, all processes), not by each micro-batch's own count. That makes a step
with N processes x micro-batch b, or with accumulation, compute exactly the gradient of one batch
of N x b (tested), so changing the number of GPUs does not change the recipe. The official
code averages per GPU, which differs only when GPUs see different numbers of labelled pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255  # the train id of unlabelled pixels in every mask; ``datasets`` maps void / "other" to it


class SegmentationLoss:
    """``kind``: ``ce`` or ``ohem`` (main output only; the aux output always uses plain CE).

    OHEM (online hard example mining, as in PyTorch-Encoding / MMSegmentation): keep the pixels whose
    probability for their true class is below ``ohem_thresh``, and at least the ``ohem_min_kept``
    hardest ones per micro-batch; the loss is their mean, weighted by the micro-batch's share of the
    step's labelled pixels.
    """

    def __init__(
        self,
        kind: str = "ce",
        *,
        aux_weight: float = 0.4,
        ohem_thresh: float = 0.7,
        ohem_min_kept: int = 100_000,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if kind not in ("ce", "ohem"):
            raise ValueError(f"loss.type must be 'ce' or 'ohem', got {kind!r}")
        self.kind, self.aux_weight = kind, aux_weight
        self.ohem_thresh, self.ohem_min_kept, self.ignore_index = ohem_thresh, ohem_min_kept, ignore_index

    def __call__(
        self, outputs: dict[str, torch.Tensor], target: torch.Tensor, normalizer: float | torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one micro-batch. ``normalizer``: labelled pixels of the step per process.

        Returns the loss to backpropagate and its detached parts for logging.
        """
        target = target.long()
        per_pixel = F.cross_entropy(outputs["out"].float(), target, ignore_index=self.ignore_index, reduction="none")
        if self.kind == "ce":
            main = per_pixel.sum() / normalizer
        else:
            valid = target != self.ignore_index
            kept = self._hard_pixels(outputs["out"].detach(), target, valid)
            share = valid.sum() / normalizer
            main = torch.where(kept, per_pixel, 0.0).sum() / kept.sum().clamp(min=1) * share
        parts = {"main": main.detach()}
        loss = main
        if "aux" in outputs and self.aux_weight > 0:
            aux = F.cross_entropy(outputs["aux"].float(), target, ignore_index=self.ignore_index, reduction="sum")
            aux = aux / normalizer
            parts["aux"] = aux.detach()
            loss = loss + self.aux_weight * aux
        return loss, parts

    def _hard_pixels(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The kept pixels, chosen on the device (no host read, so the step never waits for the GPU):
        true-class probability <= ``ohem_thresh``, raised to the ``ohem_min_kept``-th smallest
        probability when at least that many pixels are labelled."""
        prob = torch.softmax(logits.float(), dim=1).gather(1, target.clamp(max=logits.shape[1] - 1).unsqueeze(1))[:, 0]
        threshold = torch.full((), self.ohem_thresh, device=prob.device)
        if 0 < self.ohem_min_kept <= prob.numel():
            # ignored pixels rank last (inf), so the k-th of all pixels is the k-th labelled one
            # whenever k <= the labelled count, the only case where it is used
            kth = torch.kthvalue(torch.where(valid, prob, torch.inf).flatten(), self.ohem_min_kept).values
            enough = valid.sum() >= self.ohem_min_kept
            threshold = torch.where(enough, torch.maximum(threshold, kth), threshold)
        return valid & (prob <= threshold)
