"""Dataset doctor: checks a dataset root before hours of training are spent on it.

The classic silent failure in segmentation is a wrong label space: train ids saved under a labelIds
name, ADE20K annotations already shifted to 0-based, masks in another class order. Training then
runs and reports near-zero mIoU days later. ``check_dataset`` reads the masks' raw values and says
which label space they are in, next to what the loader will assume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from . import ade20k, cityscapes
from .base import IGNORE_INDEX, DatasetError, SegmentationDataset, read_mask


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        out = list(self.lines)
        out += [f"WARNING: {w}" for w in self.warnings]
        out += [f"PROBLEM: {p}" for p in self.problems]
        out.append(
            "OK: the dataset reads as expected"
            if self.ok
            else f"{len(self.problems)} problem(s): fix them before training"
        )
        return "\n".join(out)


def _splits(name: str, root: Path) -> dict[str, int | None]:
    """Splits to check, with their official image counts (None: no official count)."""
    if name == "cityscapes":
        splits = {s: cityscapes.OFFICIAL_COUNTS[s] for s in ("train", "val", "test")}
        if (root / "leftImg8bit" / "train_extra").is_dir():
            splits["train_extra"] = cityscapes.OFFICIAL_COUNTS["train_extra"]
        return splits
    if name == "ade20k":
        return dict(ade20k.OFFICIAL_COUNTS)
    return {"train": None, "val": None}


def check_dataset(
    name: str, root: str | Path, *, dataset_args: dict[str, Any] | None = None, max_masks: int = 200
) -> Report:
    """Validate every split of dataset ``name`` at ``root``; read up to ``max_masks`` masks per split."""
    from . import DATASETS

    report = Report()
    if name not in DATASETS:
        report.problems.append(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
        return report
    root = Path(root)
    report.lines.append(f"{name} at {root}")
    for split, official in _splits(name, root).items():
        try:
            dataset = DATASETS[name](root, split, **(dataset_args or {}))
        except (DatasetError, FileNotFoundError, ValueError) as err:
            (report.warnings if split in ("test", "train_extra") else report.problems).append(f"{split}: {err}")
            continue
        count = f"{len(dataset)} images" + (f" (official: {official})" if official else "")
        if official and len(dataset) != official:
            report.warnings.append(f"{split}: {len(dataset)} images where the official split has {official}")
        report.lines.append(f"{split}: {count}")
        _check_sizes(dataset, split, report)
        if dataset.samples and dataset.samples[0][1] is not None:
            _check_labels(name, dataset, split, report, max_masks)
    return report


def _check_sizes(dataset: SegmentationDataset, split: str, report: Report) -> None:
    sizes: dict[tuple[int, int], int] = {}
    mismatched = []
    for image_path, mask_path in dataset.samples:
        try:
            with Image.open(image_path) as image:
                size = image.size
            if mask_path is not None:
                with Image.open(mask_path) as mask:
                    if mask.size != size:
                        mismatched.append(f"{mask_path} ({mask.size} vs image {size})")
        except OSError as err:
            report.problems.append(f"{split}: cannot read {image_path} or its mask: {err}")
            continue
        sizes[size] = sizes.get(size, 0) + 1
    common = ", ".join(f"{w}x{h}: {n}" for (w, h), n in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
    report.lines.append(f"  image sizes (W x H): {common}{' ...' if len(sizes) > 3 else ''}")
    if mismatched:
        report.problems.append(
            f"{split}: {len(mismatched)} masks differ in size from their image, e.g. {mismatched[0]}"
        )


def _check_labels(name: str, dataset: SegmentationDataset, split: str, report: Report, max_masks: int) -> None:
    step = max(1, len(dataset) // max_masks)
    raw_counts = torch.zeros(256, dtype=torch.int64)
    for index in range(0, len(dataset), step):
        raw_counts += torch.bincount(read_mask(dataset.samples[index][1]).flatten(), minlength=256)
    values = torch.nonzero(raw_counts).flatten().tolist()
    report.lines.append(f"  mask values in {len(range(0, len(dataset), step))} masks: {_ranges(values)}")
    diagnosis = _LABEL_SPACE[name](dataset, values, raw_counts) if name in _LABEL_SPACE else None
    if diagnosis:
        report.problems.append(f"{split}: {diagnosis}")
        return
    invalid = [v for v in values if dataset.lookup[v] < 0]
    if invalid:
        report.problems.append(f"{split}: mask values {_ranges(invalid)} are not valid ({dataset.label_help})")
        return
    mapped = torch.zeros(256, dtype=torch.int64).index_add_(0, dataset.lookup.clamp(min=0).long(), raw_counts)
    total = int(mapped.sum())
    shares = [(int(mapped[i]) / total, c) for i, c in enumerate(dataset.classes)]
    report.lines.append(f"  ignored pixels: {int(mapped[IGNORE_INDEX]) / total:.1%}")
    report.lines.append(
        "  class pixels: " + ", ".join(f"{c} {s:.1%}" for s, c in sorted(shares, reverse=True) if s > 0)
    )
    absent = [c for s, c in shares if s == 0]
    if absent:
        shown = ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else "")
        report.warnings.append(f"{split}: {len(absent)} classes never appear in the checked masks: {shown}")


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts) or "none"


def _cityscapes_label_space(dataset: Any, values: list[int], counts: torch.Tensor) -> str | None:
    # 255 never is a label id; 19..33 never are train ids.
    has_ignore, has_label_ids = 255 in values, any(18 < v <= 33 for v in values)
    if dataset.label_type == "labelIds" and has_ignore and not has_label_ids:
        return (
            "files named *_labelIds.png hold train ids (values 0..18 and 255): they would be read as label ids "
            "and mapped to the wrong classes. Rename them *_labelTrainIds.png or set data.dataset_args.label_type"
        )
    if dataset.label_type == "labelTrainIds" and has_label_ids and not has_ignore:
        return (
            "files named *_labelTrainIds.png hold label ids (values 19..33): regenerate them with prepare_cityscapes.py"
        )
    return None


def _ade20k_label_space(dataset: Any, values: list[int], counts: torch.Tensor) -> str | None:
    # Official files: 0 (other) and 1..150, never 255. Shifted files: 0..149 and 255.
    if 255 in values and all(v <= 149 for v in values if v != 255):
        return (
            "annotations look already shifted to 0..149 with 255 for 'other'; this loader expects the official "
            "files (0 = other, 1..150) and would shift every class once more. Use the original annotations"
        )
    return None


_LABEL_SPACE: dict[str, Callable[..., str | None]] = {
    "cityscapes": _cityscapes_label_space,
    "ade20k": _ade20k_label_space,
}
