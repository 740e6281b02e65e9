"""Confusion matrix and the segmentation metrics derived from it.

One (C, C) int64 matrix, accumulated on the device with ``bincount`` (rows: ground truth,
columns: prediction) and summed exactly across processes. Pixels whose ground truth is ignore
(255) never count. Per class, as the official Cityscapes evaluator counts:
IoU = TP / (TP + FP + FN), NaN when the class has neither ground-truth nor predicted pixels.

A result has one headline ``miou``, in the convention of the dataset's benchmark, with its
definition beside it (``miou_definition``); the other convention is kept under its name in
``miou_other_conventions``. The two conventions (``CONVENTIONS``) agree on a full benchmark split,
where every class is present, and differ on subsets (a few validation images, the synthetic world).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .distributed import all_gather_object, all_reduce_sum
from .records import Records


class ConfusionMatrix:
    def __init__(self, num_classes: int, device: torch.device | str = "cpu", ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """``prediction`` and ``target``: integer tensors of the same shape (any batch layout)."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        target = target.to(self.matrix.device, non_blocking=True).long().flatten()
        prediction = prediction.to(self.matrix.device, non_blocking=True).long().flatten()
        valid = target != self.ignore_index
        if (target[valid] >= self.num_classes).any() or (prediction[valid] >= self.num_classes).any():
            raise ValueError(f"class ids must be < {self.num_classes} (or {self.ignore_index} in the target)")
        index = target[valid] * self.num_classes + prediction[valid]
        self.matrix += torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)

    def all_reduce(self) -> ConfusionMatrix:
        all_reduce_sum(self.matrix)
        return self

    def compute(self, over_all_classes: bool = False) -> dict[str, Any]:
        """The metrics; ``over_all_classes``: the headline mIoU averages all classes, absent ones as 0
        (ADE20K's devkit), else the classes present (the Cityscapes evaluator)."""
        m = self.matrix.double()
        tp = m.diag()
        gt, pred = m.sum(1), m.sum(0)
        union = gt + pred - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
        class_acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, math.nan))
        total = m.sum()
        present = int((~torch.isnan(iou)).sum())
        value = {"present_classes": _nanmean(iou), "all_classes_absent_as_0": float(torch.nan_to_num(iou).mean())}
        headline = "all_classes_absent_as_0" if over_all_classes else "present_classes"
        other = "present_classes" if over_all_classes else "all_classes_absent_as_0"
        counts = {"present": present, "absent": self.num_classes - present, "classes": self.num_classes}
        return {
            "miou": value[headline],
            "miou_definition": CONVENTIONS[headline].format(**counts),
            "miou_other_conventions": {other: value[other]},
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,
            "mean_accuracy": _nanmean(class_acc),
            "iou": iou.tolist(),
            "accuracy": class_acc.tolist(),
        }


class ImageCounts:
    """Per image and class: the intersection, union and ground-truth pixels (utils/records.py), gathered
    from every process in dataset order. Summed over images they are the confusion matrix's diagonal,
    row + column - diagonal and row sums.

    ``indices``: the dataset index of this process's n-th image (its sampler's order; default n).
    """

    def __init__(self, num_classes: int, indices: Sequence[int] | None = None, ignore_index: int = 255) -> None:
        self.num_classes, self.indices, self.ignore_index = num_classes, indices, ignore_index
        self.rows: list[tuple[int, str, torch.Tensor]] = []  # (index, name, (3, C) on the device)
        self.confusion: torch.Tensor | None = None  # this process's images, summed
        self.gathered: dict[str, np.ndarray] | None = None

    @torch.no_grad()
    def update(self, position: int, name: str, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The ``position``-th image of this process's loader (positions of unscored images are skipped);
        returns the image's confusion matrix, for the caller's total (counted once)."""
        image = ConfusionMatrix(self.num_classes, prediction.device, self.ignore_index)
        image.update(prediction, target)
        m = image.matrix
        tp, gt = m.diag(), m.sum(1)
        index = self.indices[position] if self.indices is not None else position
        self.rows.append((int(index), name, torch.stack([tp, gt + m.sum(0) - tp, gt])))
        self.confusion = m if self.confusion is None else self.confusion + m
        return m

    def gather(self) -> ImageCounts:
        """Every process's rows, on every process, ordered by dataset index (a collective call)."""
        counts = torch.stack([r[2] for r in self.rows]).cpu() if self.rows else torch.zeros(0, 3, self.num_classes)
        confusion = torch.zeros(self.num_classes, self.num_classes) if self.confusion is None else self.confusion
        mine = ([r[0] for r in self.rows], [r[1] for r in self.rows], counts.long().numpy(), confusion.long().cpu())
        parts = all_gather_object(mine)
        indices = np.array([i for part in parts for i in part[0]], np.int64)
        names = np.array([n for part in parts for n in part[1]], str)
        counts = np.concatenate([part[2] for part in parts]).reshape(-1, 3, self.num_classes)
        order = np.argsort(indices, kind="stable")
        self.gathered = dict(names=names[order], indices=indices[order])
        self.gathered.update(intersection=counts[order, 0], union=counts[order, 1], gt_pixels=counts[order, 2])
        self.gathered["confusion"] = sum(part[3] for part in parts).numpy()
        return self

    def records(self, classes: Sequence[str], over_all_classes: bool, protocol: str) -> Records:
        if self.gathered is None:
            raise RuntimeError("ImageCounts.records() before gather()")
        return Records(**self.gathered, classes=tuple(classes), over_all_classes=over_all_classes, protocol=protocol)


CONVENTIONS = {  # how a benchmark averages class IoUs into mIoU; {present} of {classes} classes have an IoU
    "present_classes": "mean IoU over the {present} of {classes} classes present in the ground truth or the "
    "predictions (the Cityscapes evaluator and MMSegmentation average so)",
    "all_classes_absent_as_0": "mean IoU over all {classes} classes, the {absent} absent ones counting 0 "
    "(ADE20K's devkit and the official SPNet / PyTorch-Encoding code average so)",
}


def _nanmean(values: torch.Tensor) -> float:
    present = values[~torch.isnan(values)]
    return float(present.mean()) if present.numel() else math.nan


def format_table(metrics: dict, class_names: tuple[str, ...] | list[str], protocol: object = None) -> str:
    """Per-class IoU / accuracy table and the summary lines, in percent; the protocol line first if given."""
    width = max(len(n) for n in class_names)
    lines = [f"protocol: {protocol}"] if protocol is not None else []
    lines.append(f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}")
    for name, iou, acc in zip(class_names, metrics["iou"], metrics["accuracy"]):
        lines.append(f"{name:<{width}}  {_percent(iou)}  {_percent(acc)}")
    lines.append(
        f"mIoU {_percent(metrics['miou'])}  pixel acc {_percent(metrics['pixel_accuracy'])}  "
        f"mean acc {_percent(metrics['mean_accuracy'])}"
    )
    lines.append(f"mIoU: {metrics['miou_definition']}")
    for name, value in metrics["miou_other_conventions"].items():
        lines.append(f"(the other convention, {name.replace('_', ' ')}: {_percent(value).strip()})")
    return "\n".join(lines)


def _percent(value: float) -> str:
    return "   n/a" if math.isnan(value) else f"{100 * value:6.2f}"
