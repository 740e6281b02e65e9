"""Confusion matrix and the segmentation metrics derived from it.

One (C, C) int64 matrix, accumulated on the device with ``bincount`` (rows: ground truth,
columns: prediction) and summed exactly across processes. Pixels whose ground truth is ignore
(255) never count. Per class, as the official Cityscapes evaluator counts:
IoU = TP / (TP + FP + FN), NaN when the class has neither ground-truth nor predicted pixels, and
``miou`` is the mean over the classes that are not NaN. ``miou_all_classes`` counts such classes as
0, the convention of the official SPNet (semseg) and PyTorch-Encoding code; on a full benchmark
split every class is present and the two agree.
"""

from __future__ import annotations

import math

import torch

from .distributed import all_reduce_sum


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

    def compute(self) -> dict[str, float | list[float]]:
        m = self.matrix.double()
        tp = m.diag()
        gt, pred = m.sum(1), m.sum(0)
        union = gt + pred - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
        class_acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, math.nan))
        total = m.sum()
        return {
            "miou": _nanmean(iou),
            "miou_all_classes": float(torch.nan_to_num(iou, nan=0.0).mean()),
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,
            "mean_accuracy": _nanmean(class_acc),
            "iou": iou.tolist(),
            "accuracy": class_acc.tolist(),
        }


def _nanmean(values: torch.Tensor) -> float:
    present = values[~torch.isnan(values)]
    return float(present.mean()) if present.numel() else math.nan


def format_table(metrics: dict, class_names: tuple[str, ...] | list[str], protocol: object = None) -> str:
    """Per-class IoU / accuracy table plus the summary line, in percent; the protocol line first if given."""
    width = max(len(n) for n in class_names)
    lines = [f"protocol: {protocol}"] if protocol is not None else []
    lines.append(f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}")
    for name, iou, acc in zip(class_names, metrics["iou"], metrics["accuracy"]):
        lines.append(f"{name:<{width}}  {_percent(iou)}  {_percent(acc)}")
    lines.append(
        f"mIoU {_percent(metrics['miou'])}  (all classes: {_percent(metrics['miou_all_classes'])})  "
        f"pixel acc {_percent(metrics['pixel_accuracy'])}  mean acc {_percent(metrics['mean_accuracy'])}"
    )
    return "\n".join(lines)


def _percent(value: float) -> str:
    return "   n/a" if math.isnan(value) else f"{100 * value:6.2f}"
