"""The training criterion: a weighted sum of loss terms on the main output, plus ``aux_weight`` x on the aux output.

Terms (``loss.terms``, each ``{name, weight, ...options}``; docs/training.md has every formula):

| name | loss | per |
|---|---|---|
| ce | cross-entropy, ``w[y] * -log p_y`` | pixel |
| ohem | cross-entropy over the hard pixels only (main output; the aux output takes plain ce) | pixel |
| focal | Lin et al. 2017, ``w[y] * -(1 - p_y)^gamma log p_y`` | pixel |
| dice | multi-class soft Dice, ``1 - (2 sum p g + s) / (sum p + sum g + s)`` per class | micro-batch |
| lovasz | Lovász-softmax, Berman et al. 2018, over the classes present | micro-batch |

``w`` are the class weights (``loss.class_weight``; all 1 without). Pixel terms are summed and
divided by the number of labelled pixels of the whole *step* (all micro-batches of gradient
accumulation, all processes), not by each micro-batch's own count. That makes a step with N
processes x micro-batch b, or with accumulation, compute exactly the gradient of one batch of N x b
(tested), so changing the number of GPUs does not change the recipe. Class weights multiply the
pixels and keep that divisor (MMSegmentation's convention, not PyTorch's weighted mean). Set terms
(dice, lovasz) are computed over a micro-batch and weighted by its share of the step's labelled
pixels: one micro-batch per step gives exactly the batch's loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .loss_terms import LossTerm, parse_terms

IGNORE_INDEX = 255  # the train id of unlabelled pixels in every mask; ``datasets`` maps void / "other" to it


class SegmentationLoss:
    """``kind`` (``ce`` or ``ohem``) alone, or ``terms``: the main output's loss; the aux output's is the
    same sum with ohem as plain ce (hard-example mining is the recipe's main loss only), x ``aux_weight``.

    OHEM (online hard example mining, as in PyTorch-Encoding / MMSegmentation): keep the pixels whose
    probability for their true class is below ``ohem_thresh``, and at least the ``ohem_min_kept``
    hardest ones per micro-batch; the loss is their mean, weighted by the micro-batch's share of the
    step's labelled pixels. ``class_weight``: one weight per class, or None.
    """

    def __init__(
        self,
        kind: str = "ce",
        *,
        terms: Sequence[LossTerm] | None = None,
        aux_weight: float = 0.4,
        class_weight: Sequence[float] | torch.Tensor | None = None,
        ohem_thresh: float = 0.7,
        ohem_min_kept: int = 100_000,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if kind not in ("ce", "ohem"):
            raise ValueError(f"loss.type must be 'ce' or 'ohem', got {kind!r}")
        self.terms = list(terms) if terms is not None else [LossTerm(kind)]
        self.aux_terms = [dataclasses.replace(t, name="ce") if t.name == "ohem" else t for t in self.terms]
        self.aux_weight = aux_weight
        self.class_weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
        self.ohem_thresh, self.ohem_min_kept, self.ignore_index = ohem_thresh, ohem_min_kept, ignore_index

    def __call__(
        self, outputs: dict[str, torch.Tensor], target: torch.Tensor, normalizer: float | torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one micro-batch. ``normalizer``: labelled pixels of the step per process.

        Returns the loss to backpropagate and its detached parts for logging.
        """
        target = target.long()
        main = self._sum(self.terms, outputs["out"], target, normalizer)
        parts = {"main": main.detach()}
        loss = main
        if "aux" in outputs and self.aux_weight > 0:
            aux = self._sum(self.aux_terms, outputs["aux"], target, normalizer)
            parts["aux"] = aux.detach()
            loss = loss + self.aux_weight * aux
        return loss, parts

    def _sum(
        self, terms: list[LossTerm], logits: torch.Tensor, target: torch.Tensor, normalizer: float | torch.Tensor
    ) -> torch.Tensor:
        logits = logits.float()
        valid = target != self.ignore_index
        weight = None if self.class_weight is None else self.class_weight.to(logits.device)
        total = None
        for term in terms:
            if term.name == "ohem":
                value = self._ohem(logits, target, valid, weight, normalizer)
            elif term.name in PIXEL_LOSSES:
                per_pixel = PIXEL_LOSSES[term.name](logits, target, valid, weight, **term.options)
                value = per_pixel.sum() / normalizer
            else:
                value = SET_LOSSES[term.name](logits, target, valid, weight, **term.options) * (
                    valid.sum() / normalizer
                )
            total = term.weight * value if total is None else total + term.weight * value
        return total

    def _ohem(self, logits, target, valid, weight, normalizer) -> torch.Tensor:
        per_pixel = cross_entropy(logits, target, valid, weight)
        kept = self._hard_pixels(logits.detach(), target, valid)
        share = valid.sum() / normalizer
        return torch.where(kept, per_pixel, 0.0).sum() / kept.sum().clamp(min=1) * share

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


def _pixel_weight(target: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor | None:
    """``w[y]`` per pixel (0 where ignored: the ignore id is no index into ``w``)."""
    if weight is None:
        return None
    return torch.where(valid, weight[target.clamp(max=len(weight) - 1)], 0.0)


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor | None
) -> torch.Tensor:
    """Per pixel ``w[y] * -log softmax(logits)_y``; 0 at ignored pixels. (B, H, W)"""
    ce = F.cross_entropy(logits, torch.where(valid, target, 0), reduction="none")
    w = _pixel_weight(target, valid, weight)
    return torch.where(valid, ce, 0.0) if w is None else ce * w


def focal(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor | None, *, gamma: float
) -> torch.Tensor:
    """Focal loss (Lin, Goyal, Girshick, He, Dollár, "Focal Loss for Dense Object Detection", ICCV 2017,
    https://arxiv.org/abs/1708.02002): ``-alpha_y (1 - p_y)^gamma log p_y`` per pixel, alpha = the class
    weights. It down-weights the pixels the model already gets right; gamma = 0 is cross-entropy."""
    log_p = torch.log_softmax(logits, dim=1).gather(1, torch.where(valid, target, 0).unsqueeze(1))[:, 0]  # (B, H, W)
    loss = -((1 - log_p.exp()) ** gamma) * log_p
    w = _pixel_weight(target, valid, weight)
    return torch.where(valid, loss, 0.0) if w is None else loss * w


def _weighted_mean(per_class: torch.Tensor, counted: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``per_class`` over the ``counted`` classes, weighted by the class weights."""
    w = counted.float() if weight is None else counted.float() * weight
    return (per_class * w).sum() / w.sum().clamp(min=1e-12)


def dice(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor | None, *, smooth: float
) -> torch.Tensor:
    """Multi-class soft Dice (Milletari et al., V-Net, 2016, with the plain sums of Sudre et al. 2017):
    ``1 - (2 sum_i p_ic g_ic + s) / (sum_i p_ic + sum_i g_ic + s)`` per class c over the labelled pixels i
    of the micro-batch, averaged over all classes (weighted by the class weights)."""
    num_classes = logits.shape[1]
    prob = torch.softmax(logits, dim=1).movedim(1, -1)[valid]  # (N, C) labelled pixels
    one_hot = F.one_hot(target[valid], num_classes).float()  # (N, C)
    per_class = 1 - (2 * (prob * one_hot).sum(0) + smooth) / (prob.sum(0) + one_hot.sum(0) + smooth)
    return _weighted_mean(per_class, torch.ones(num_classes, dtype=torch.bool, device=logits.device), weight)


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """The gradient of the Lovász extension of the Jaccard loss at pixels sorted by falling error:
    ``Delta_J(M_k) - Delta_J(M_k-1)`` with ``Delta_J(M) = |M| / |G u M|`` (Berman et al., Alg. 1)."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor | None
) -> torch.Tensor:
    """Lovász-softmax (Berman, Rannen Triki, Blaschko, "The Lovász-Softmax loss", CVPR 2018,
    https://arxiv.org/abs/1705.08790): per class c, the Lovász extension of the Jaccard loss at the
    errors ``|g_ic - p_ic|`` of the micro-batch's labelled pixels; averaged over the classes present in
    the target (the paper code's ``classes='present'``; weighted by the class weights)."""
    num_classes = logits.shape[1]
    prob = torch.softmax(logits, dim=1).movedim(1, -1)[valid]  # (N, C)
    one_hot = F.one_hot(target[valid], num_classes).float()  # (N, C)
    errors = (one_hot - prob).abs()
    per_class = []
    for c in range(num_classes):
        order = torch.argsort(errors[:, c], descending=True)
        per_class.append(torch.dot(errors[order, c], lovasz_grad(one_hot[order, c])) if len(order) else errors.sum())
    present = one_hot.sum(0) > 0
    return _weighted_mean(torch.stack(per_class), present, weight)


# the per-pixel terms (summed over the step's labelled pixels) and the set terms (one value per micro-batch)
PIXEL_LOSSES: dict[str, Callable[..., torch.Tensor]] = {"ce": cross_entropy, "focal": focal}
SET_LOSSES: dict[str, Callable[..., torch.Tensor]] = {"dice": dice, "lovasz": lovasz}


def build_criterion(cfg: Any, num_classes: int, class_weight: Sequence[float] | None = None) -> SegmentationLoss:
    """The criterion of the ``loss`` section. ``class_weight``: the weights in use (the caller computes
    ``{auto: ...}`` from the data); a list in the config must have one weight per class."""
    if class_weight is not None and len(class_weight) != num_classes:
        raise ValueError(
            f"loss.class_weight has {len(class_weight)} weights but the model has {num_classes} classes "
            "(model.num_classes): give one weight per class, in the dataset's class order, or {auto: median_frequency}"
        )
    terms = parse_terms(cfg.terms) if cfg.terms is not None else None
    return SegmentationLoss(
        cfg.type, terms=terms, aux_weight=cfg.aux_weight, class_weight=class_weight,
        ohem_thresh=cfg.ohem_thresh, ohem_min_kept=cfg.ohem_min_kept,
    )  # fmt: skip
