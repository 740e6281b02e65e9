"""Per-image evaluation records: the file that lets two runs be compared with confidence.

A dataset's mIoU is not a mean over images: every class IoU is the dataset's summed intersection
over its summed union. Resampling images (a bootstrap) or swapping them between runs (a paired
permutation test) therefore needs, per image and class, the intersection and the union; the
ground-truth pixel count comes along for per-class pixel accuracy. Summed over images they are the
confusion matrix's diagonal, row + column - diagonal and row sums, exactly.

``<results>.records.npz`` (eval.py, beside its JSON) and ``val_records.npz`` (train.py, beside
``val_metrics.json``) hold, in dataset order:

    names            (N,)   str    the image's name in its dataset (Cityscapes: frankfurt_000000_000294)
    indices          (N,)   int64  its index in the dataset
    intersection     (N, C) int64  pixels of class c predicted c
    union            (N, C) int64  pixels of class c in the ground truth or the prediction
    gt_pixels        (N, C) int64  pixels of class c in the ground truth
    classes          (C,)   str    the class names
    over_all_classes ()     bool   the dataset's headline mIoU averages all classes (ADE20K), else
                                   the classes present (Cityscapes): utils/metrics.py, CONVENTIONS
    protocol         ()     str    the protocol's slug (spnet_slide768_s1_flip)
    confusion        (C, C) int64  the confusion matrix of all the images (rows: ground truth), for
                                   ``scripts/plot.py confusion``; absent from files of older versions

numpy only, so that reading and comparing records never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .results import atomic_write

COUNTS = ("intersection", "union", "gt_pixels")


@dataclass(frozen=True)
class Records:
    names: np.ndarray
    indices: np.ndarray
    intersection: np.ndarray
    union: np.ndarray
    gt_pixels: np.ndarray
    classes: tuple[str, ...]
    over_all_classes: bool
    protocol: str
    confusion: np.ndarray | None = None  # (C, C), rows: ground truth; the per-image counts cannot rebuild it
    path: Path | None = None  # where it was read from, for error messages

    def miou(self) -> float:
        """The headline mIoU of these images, as ``ConfusionMatrix.compute`` defines it."""
        return float(miou(self.intersection.sum(0), self.union.sum(0), self.over_all_classes))


def miou(intersection: np.ndarray, union: np.ndarray, over_all_classes: bool) -> np.ndarray:
    """mIoU from summed counts (..., C): a class with no union is absent (left out, or 0 over all classes).

    The class IoUs are added one class at a time, in class order, so that a loop written in plain
    Python adds them in the same order and gets the same float.
    """
    intersection, union = np.asarray(intersection, np.float64), np.asarray(union, np.float64)
    present = union > 0
    iou = np.where(present, intersection / np.where(present, union, 1), 0.0)
    total = np.zeros(iou.shape[:-1])
    for c in range(iou.shape[-1]):
        total = total + iou[..., c]
    count = np.full(iou.shape[:-1], iou.shape[-1]) if over_all_classes else present.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count  # NaN where no class is present


def save_records(path: str | Path, records: Records) -> Path:
    """Write ``records`` atomically (a reader never sees half a file)."""
    path = Path(path)
    arrays = {name: np.asarray(getattr(records, name), np.int64) for name in ("indices", *COUNTS)}
    if records.confusion is not None:
        arrays["confusion"] = np.asarray(records.confusion, np.int64)
    with atomic_write(path, "wb") as f:
        np.savez(
            f, names=np.asarray(records.names, str), classes=np.asarray(records.classes, str),
            over_all_classes=np.bool_(records.over_all_classes), protocol=np.str_(records.protocol), **arrays,
        )  # fmt: skip
    return path


def load_records(path: str | Path) -> Records:
    """Read a records file; a file that is not one is a ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such records file (eval.py writes <results>.records.npz)")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {key: f[key] for key in f.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a records file ({err})") from err
    missing = sorted({"names", "indices", "classes", "over_all_classes", "protocol", *COUNTS} - set(data))
    if missing:
        raise ValueError(f"{path}: not a records file of eval.py or train.py (no {', '.join(missing)})")
    return Records(
        names=data["names"], indices=data["indices"], intersection=data["intersection"], union=data["union"],
        gt_pixels=data["gt_pixels"], classes=tuple(str(c) for c in data["classes"]),
        over_all_classes=bool(data["over_all_classes"]), protocol=str(data["protocol"]),
        confusion=data.get("confusion"), path=path,
    )  # fmt: skip


def records_path(results: str | Path) -> Path:
    """The records file beside a results JSON: ``eval_val_x.json`` -> ``eval_val_x.records.npz``."""
    results = Path(results)
    return results.with_name(f"{results.stem}.records.npz")
