"""Dataset doctor: checks a dataset root before hours of training are spent on it.

The classic silent failure in segmentation is a wrong label space: train ids saved under a labelIds
name, ADE20K annotations already shifted to 0-based, masks in another class order. Training then
runs and reports near-zero mIoU days later. ``check_dataset`` reads the masks' raw values and says
which label space they are in, next to what the loader will assume. It also decodes every image
and mask in full, as training will: a truncated file has a valid header and only fails when its
pixels are read, hours into a run.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from utils.registry import BuildError, construct

from . import ade20k, cityscapes, pascal_context
from .base import (
    IGNORE_INDEX,
    LIMIT_KEY,
    DatasetError,
    MissingFolderError,
    SegmentationDataset,
    _open_image,
    read_image,
)


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


# Splits a tree may leave out, and why one would want them.
_OPTIONAL = {
    "test": "only needed for test-set submissions",
    "train_extra": "only needed to train on the coarse annotations",
}


def _splits(name: str, root: Path) -> dict[str, int | None]:
    """Splits to check, with their official image counts (None: no official count); see ``_OPTIONAL``."""
    if name == "cityscapes":
        splits = {s: cityscapes.OFFICIAL_COUNTS[s] for s in ("train", "val", "test")}
        if (root / "leftImg8bit" / "train_extra").is_dir():
            splits["train_extra"] = cityscapes.OFFICIAL_COUNTS["train_extra"]
        return splits
    if name == "ade20k":
        return dict(ade20k.OFFICIAL_COUNTS)
    if name == "pascal_context":
        return dict(pascal_context.OFFICIAL_COUNTS)
    return {"train": None, "val": None}


def check_dataset(
    name: str,
    root: str | Path,
    *,
    dataset_args: dict[str, Any] | None = None,
    max_masks: int = 200,
    max_images: int | None = None,
    args_key: str = "dataset_args",
    max_pixels: int | None = None,
    limit_key: str = LIMIT_KEY,
) -> Report:
    """Validate every split of dataset ``name`` at ``root``.

    Decodes every image and mask (or ``max_images`` evenly spaced samples per split), since a
    header can be fine where the pixels are truncated; label statistics use ``max_masks`` masks.
    ``dataset_args`` that the dataset does not take, or rejects, raise a ``BuildError`` naming
    ``args_key`` (where the user set them), as ``build_dataset`` does for a config. Images and masks
    over ``max_pixels`` pixels (None: Pillow's limit) are problems that name ``limit_key``.
    """
    from . import DATASETS

    report = Report()
    if name not in DATASETS:
        report.problems.append(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
        return report
    root = Path(root)
    report.lines.append(f"{name} at {root}")
    for split, official in _splits(name, root).items():
        try:
            dataset = construct(DATASETS[name], args_key, root, split, options=dataset_args)
        except BuildError:
            raise  # wrong arguments, not wrong data: one error, as train.py gives it
        except (DatasetError, FileNotFoundError, ValueError) as err:
            if split not in _OPTIONAL:
                report.problems.append(f"{split}: {err}")
            elif isinstance(err, MissingFolderError):  # the layout block is for required splits
                report.warnings.append(f"{split}: not found at {err.path} (optional: {_OPTIONAL[split]})")
            else:
                report.warnings.append(f"{split}: {err}")
            continue
        count = f"{len(dataset)} images" + (f" (official: {official})" if official else "")
        if official and len(dataset) != official:
            report.warnings.append(f"{split}: {len(dataset)} images where the official split has {official}")
        report.lines.append(f"{split}: {count}")
        if getattr(dataset, "layout", None):
            report.lines.append(f"  layout: {dataset.layout}")
        has_masks = bool(dataset.samples) and dataset.samples[0][1] is not None
        label_indices = _evenly_spaced(len(dataset), max_masks) if has_masks else []
        dataset.max_pixels = max_pixels
        if name == "folder" and label_indices:
            _folder_convention(dataset, split, report, label_indices, args_key, limit_key)
        decoded = _evenly_spaced(len(dataset), max_images)
        mask_counts = _check_files(dataset, split, report, decoded, label_indices, limit_key)
        if mask_counts:  # none when no mask could be read: the problems above say why
            _check_labels(name, dataset, split, report, mask_counts, root)
    return report


def _evenly_spaced(n: int, k: int | None) -> list[int]:
    """At most ``k`` indices spread over range(n); all of them when ``k`` is None or >= n."""
    if k is None or k >= n:
        return list(range(n))
    return sorted({i * n // k for i in range(max(k, 0))})


def _check_files(
    dataset: SegmentationDataset,
    split: str,
    report: Report,
    indices: list[int],
    label_indices: list[int],
    limit_key: str,
) -> dict[int, torch.Tensor]:
    """Decode the images and masks of ``indices`` as training will; bincounts of the label masks' values."""
    sizes: Counter[tuple[int, int]] = Counter()
    mismatched, failures, counts = [], [], {}
    decoded, labelled, files = set(indices), set(label_indices), 0
    for index in tqdm(sorted(decoded | labelled), desc=split, file=sys.stderr, disable=None, leave=False):
        image_path, mask_path = dataset.samples[index]
        image = mask = None
        if index in decoded:
            files += 1
            try:
                image = read_image(image_path, dataset.max_pixels, limit_key)
                sizes[(image.shape[2], image.shape[1])] += 1
            except DatasetError as err:
                failures.append(str(err))
        if mask_path is not None:
            files += 1
            try:
                mask = dataset.raw_mask(index, limit_key)
            except DatasetError as err:
                failures.append(str(err))
        if image is not None and mask is not None and mask.shape != image.shape[1:]:
            mask_size, image_size = (mask.shape[1], mask.shape[0]), (image.shape[2], image.shape[1])
            mismatched.append(f"{mask_path} ({mask_size} vs image {image_size})")
        if mask is not None and index in labelled:
            counts[index] = torch.bincount(mask.flatten(), minlength=256)
    with_masks = " and their masks" if dataset.samples and dataset.samples[0][1] is not None else ""
    report.lines.append(f"  decoded {len(decoded)} of {len(dataset)} images{with_masks}")
    common = ", ".join(f"{w}x{h}: {n}" for (w, h), n in sizes.most_common(3))
    report.lines.append(f"  image sizes (W x H): {common}{' ...' if len(sizes) > 3 else ''}")
    if failures:
        shown = "\n  ".join(failures[:5]) + ("\n  ..." if len(failures) > 5 else "")
        report.problems.append(f"{split}: {len(failures)} of {files} files cannot be read for training:\n  {shown}")
    if mismatched:
        report.problems.append(
            f"{split}: {len(mismatched)} masks differ in size from their image, e.g. {mismatched[0]}"
        )
    return counts


def _check_labels(
    name: str, dataset: SegmentationDataset, split: str, report: Report, counts: dict[int, torch.Tensor], root: Path
) -> None:
    raw_counts = sum(counts.values(), torch.zeros(256, dtype=torch.int64))
    values = torch.nonzero(raw_counts).flatten().tolist()
    report.lines.append(f"  mask values in {len(counts)} masks: {_ranges(values)}")
    diagnosis = _LABEL_SPACE[name](dataset, values, raw_counts) if name in _LABEL_SPACE else None
    if diagnosis:
        report.problems.append(f"{split}: {diagnosis}")
        return
    invalid = [v for v in values if dataset.lookup[v] < 0]
    if invalid:
        bad = [_relative(dataset.samples[i][1], root) for i, c in counts.items() if (c[dataset.lookup < 0] > 0).any()]
        shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        report.problems.append(
            f"{split}: mask values {_ranges(invalid)} are not valid ({dataset.label_help}): "
            f"in {len(bad)} of {len(counts)} masks, e.g. {shown}"
        )
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


# Masks the convention check opens (evenly spaced among the label statistics' masks).
CONVENTION_MASKS = 50
# Share of the border pixels that must be 0 for 0 to look like "unlabelled" (reduce_zero_label).
ZERO_BORDER_SHARE = 0.5


def _folder_convention(
    dataset: Any, split: str, report: Report, indices: list[int], args_key: str, limit_key: str
) -> None:
    """Say which mask convention a folder dataset's files look like, next to the configured one, and the key to set.

    Reads the files as stored (not through the dataset's conversion): RGB files are colour masks
    (``mask_format: rgb``); 0 in every mask and on most border pixels is "unlabelled"
    (``reduce_zero_label``); values above the class count are ids of another label space (``label_map``).
    """
    n, ignore = len(dataset.classes), dataset.lookup
    colors: Counter[int] = Counter()
    values, rgb, with_zero, border_zero, border = set(), 0, 0, 0, 0
    checked = [indices[i * len(indices) // CONVENTION_MASKS] for i in range(min(CONVENTION_MASKS, len(indices)))]
    for index in checked:
        try:
            with _open_image(dataset.samples[index][1], "mask", dataset.max_pixels, limit_key) as image:
                array = np.array(image.convert("L") if image.mode == "1" else image)
        except (DatasetError, OSError, ValueError, SyntaxError):
            continue  # the decoding check reports it
        if array.ndim == 3:
            rgb += 1
            packed = (array[..., 0].astype(np.int32) << 16) | (array[..., 1].astype(np.int32) << 8) | array[..., 2]
            found, counts = np.unique(packed, return_counts=True)
            colors.update(dict(zip(found.tolist(), counts.tolist(), strict=True)))
            continue
        values.update(np.unique(array).tolist())
        with_zero += bool((array == 0).any())
        edge = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
        border_zero, border = border_zero + int((edge == 0).sum()), border + edge.size
    key = (lambda k, v: f"{args_key} {k}={v}") if args_key.startswith("--") else (lambda k, v: f"{args_key}.{k}: {v}")
    convention = dataset.convention
    if rgb:
        total = sum(colors.values())
        shown = ", ".join(f"{list(_rgb(c))} {k / total:.1%}" for c, k in colors.most_common(8))
        more = " ..." if len(colors) > 8 else ""
        report.lines.append(
            f"  mask convention: RGB colour masks ({rgb} of {len(checked)} checked, {len(colors)} colours)"
        )
        if convention != "rgb":
            report.problems.append(
                f"{split}: the masks are RGB colour images ({len(colors)} colours: {shown}{more}); "
                f"set {key('mask_format', 'rgb')} and give every class its color: "
                "classes: [{name: road, color: [128, 64, 128]}, ...] (colours meaning unlabelled: ignore_colors)"
            )
        return
    if not checked or convention == "label_map":
        return
    zero_share = border_zero / border if border else 0.0
    zero_everywhere = with_zero == len(checked)
    above = sorted(v for v in values if v >= n and ignore[v] != 255) if convention == "class ids" else []
    if convention == "rgb":
        report.problems.append(f"{split}: the masks are single-channel class ids, not colours; remove mask_format: rgb")
    elif convention == "reduce_zero_label" and not with_zero:
        report.problems.append(
            f"{split}: reduce_zero_label is set but none of the {len(checked)} checked masks holds 0: the masks look "
            "0-based already, and every class would be read as the one before it; "
            f"remove {key('reduce_zero_label', 'true')}"
        )
    elif above and zero_everywhere and max(above) == n:
        report.lines.append(f"  mask convention: 0 = unlabelled, classes 1..{n} (reduce_zero_label)")
        report.problems.append(
            f"{split}: the masks hold values 0..{n} for {n} classes, 0 in every checked mask ({zero_share:.0%} of the "
            "border pixels): 0 looks like 'unlabelled' and value k like class k - 1; "
            f"set {key('reduce_zero_label', 'true')}"
        )
    elif above:
        report.lines.append("  mask convention: ids outside the class list (label_map)")
        guess = ", ".join(f"{v}: {i}" for i, v in enumerate(sorted(v for v in values if ignore[v] != 255)))
        report.problems.append(
            f"{split}: mask values {_ranges(above)} are above the {n} class ids: the masks hold another label space; "
            f"map it with {key('label_map', '{raw value: train id, ...}')}, e.g. {{{guess}}} if the classes are in "
            "that order (values left out are errors, or ignored with unlisted: ignore)"
        )
    elif convention == "class ids" and zero_everywhere and zero_share >= ZERO_BORDER_SHARE:
        report.lines.append(f"  mask convention: class ids, 0 on {zero_share:.0%} of the border pixels")
        report.warnings.append(
            f"{split}: 0 ({dataset.classes[0]}) is in every checked mask and on {zero_share:.0%} of the border pixels, "
            f"as an 'unlabelled' value is; if 0 means unlabelled, set {key('reduce_zero_label', 'true')} and leave "
            "it out of classes"
        )
    else:
        report.lines.append(f"  mask convention: {convention}, as configured")


def _rgb(packed: int) -> tuple[int, int, int]:
    return (packed >> 16) & 255, (packed >> 8) & 255, packed & 255


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


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


def _pascal_context_label_space(dataset: Any, values: list[int], counts: torch.Tensor) -> str | None:
    # The converters write 0 (background) and 1..59, never 255; reduced copies hold 0..58 and 255.
    if 255 in values and all(v <= 58 for v in values if v != 255):
        return (
            "masks look already reduced to 0..58 with 255 for background; this loader expects the converters' "
            "files (0 = background, 1..59) and would shift every class once more. Use PyTorch-Encoding's or "
            "MMSegmentation's masks"
        )
    return None


_LABEL_SPACE: dict[str, Callable[..., str | None]] = {
    "cityscapes": _cityscapes_label_space,
    "ade20k": _ade20k_label_space,
    "pascal_context": _pascal_context_label_space,
}
