"""Class statistics of a split (pixel and image frequency per class) and the class weights they give.

``count_masks`` is the pass over a split's masks that ``train.py`` makes before it writes anything
(``engine.data.read_masks``: every mask checked against the label convention; the counts kept in the
run folder as ``class_statistics.json``, keyed by ``split_key``, so a changed file list, class list
or label mapping is read again); ``loss.class_weight: {auto: METHOD}`` is computed from them, and
``scripts/check_dataset.py --stats`` prints and writes them.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset
from tqdm import tqdm

from utils.registry import construct

from . import DATASETS
from .base import IGNORE_INDEX, DatasetError, SegmentationDataset

METHODS = ("median_frequency", "inverse_sqrt", "enet_log")
ENET_C = 1.02  # ENet's c: weights stay within [1, 1 / ln(1.02)] = [1, 50.5]


@dataclass
class ClassStatistics:
    """Counts over the masks of a split; ``present_pixels[c]``: labelled pixels of the images that hold class c."""

    split_key: str
    classes: list[str]
    num_images: int
    pixels: list[int]
    images: list[int]
    present_pixels: list[int]
    ignored_pixels: int
    zero_masks: int = 0  # masks holding the raw value 0 (the "unlabelled" of reduce_zero_label)

    @property
    def labelled_pixels(self) -> int:
        return sum(self.pixels)

    def pixel_frequency(self) -> list[float]:
        """Share of the split's labelled pixels per class."""
        total = max(self.labelled_pixels, 1)
        return [p / total for p in self.pixels]

    def image_frequency(self) -> list[float]:
        """Share of the split's images that hold the class."""
        return [n / max(self.num_images, 1) for n in self.images]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pixel_frequency": self.pixel_frequency(), "image_frequency": self.image_frequency()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassStatistics:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    @classmethod
    def combined(cls, parts: list[ClassStatistics]) -> ClassStatistics:
        """The counts of a split from the counts of its shards (``count_masks`` in several processes)."""
        first = parts[0]
        sums = [
            [sum(values) for values in zip(*(getattr(p, name) for p in parts), strict=True)]
            for name in ("pixels", "images", "present_pixels")
        ]
        totals = [sum(getattr(p, name) for p in parts) for name in ("num_images", "ignored_pixels", "zero_masks")]
        return cls(first.split_key, first.classes, totals[0], *sums, totals[1], totals[2])

    def __str__(self) -> str:
        width = max(len(c) for c in self.classes) if self.classes else 5
        lines = [
            f"{self.num_images} images, {self.labelled_pixels:,} labelled pixels, {self.ignored_pixels:,} ignored",
            f"{'class':<{width}}  {'pixels %':>9}  {'images %':>9}",
        ]
        for name, pixel, image in zip(self.classes, self.pixel_frequency(), self.image_frequency()):
            lines.append(f"{name:<{width}}  {100 * pixel:9.3f}  {100 * image:9.2f}")
        return "\n".join(lines)


def mask_samples(dataset: Any) -> list[tuple[SegmentationDataset, int]]:
    """(dataset, index) of every sample with a mask that ``dataset`` reads, in order: the parts of a
    ``ConcatDataset`` (several training splits), the indices of a ``Subset`` (``train.eval_max_images``)."""
    return [(part, index) for part, index in _samples(dataset) if part.samples[index][1] is not None]


def _samples(dataset: Any) -> list[tuple[SegmentationDataset, int]]:
    if isinstance(dataset, Subset):
        inner = _samples(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    if isinstance(dataset, ConcatDataset):
        return [sample for part in dataset.datasets for sample in _samples(part)]
    return [(dataset, index) for index in range(len(dataset))]


def dataset_classes(dataset: Any) -> tuple[str, ...]:
    """The class names of a dataset, also through a ``Subset``."""
    return tuple(dataset.dataset.classes if isinstance(dataset, Subset) else dataset.classes)


def split_key(dataset: Any) -> str:
    """SHA-256 of what the counts depend on: the mask files in order, the class names and each part's label
    mapping (the lookup table, and the class colours of colour masks)."""
    h = hashlib.sha256(json.dumps(list(dataset_classes(dataset))).encode())
    seen: set[int] = set()
    for part, index in mask_samples(dataset):
        if id(part) not in seen:
            seen.add(id(part))
            h.update(part.lookup.numpy().tobytes())
            codes = getattr(part, "codes", None)  # colour masks: the colours are the mapping
            h.update(json.dumps([codes.colors, codes.ignore_colors] if codes is not None else None).encode())
        h.update(f"{part.samples[index][1]}\n".encode())
    return h.hexdigest()


class _RawCounts(Dataset):
    """Item i: (i, bincount of the raw mask values, None), or (i, None, the dataset's error) for a mask that cannot
    be read as configured (unreadable, a value or colour outside the convention). Errors come back as data, so
    a scan split over processes can agree on the first one before anyone raises."""

    def __init__(self, masks: list[tuple[SegmentationDataset, int]]) -> None:
        self.masks = masks

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        part, index = self.masks[i]
        try:
            counts = torch.bincount(part.raw_mask(index).flatten().long(), minlength=256)
            if (counts[part.lookup < 0] > 0).any():
                part.load_mask(index)  # raises the dataset's own error, naming the file and the values
        except DatasetError as err:
            return i, None, str(err)
        return i, counts, None


def count_masks(
    dataset: Any, *, shard: tuple[int, int] = (0, 1), workers: int = 0, progress: bool = True, desc: str = "masks"
) -> tuple[ClassStatistics, tuple[int, str] | None]:
    """Counts over the masks ``shard = (rank, processes)`` reads of ``dataset`` (every ``processes``-th from
    ``rank``), read by ``workers`` DataLoader processes, and the first mask that cannot be read as configured,
    as (its position in the split, the error). It stops at that mask; the counts are then partial.

    The loader has its own generator: the scan draws nothing from the global RNG."""
    rank, processes = shard
    masks = mask_samples(dataset)
    classes = dataset_classes(dataset)
    num_classes = len(classes)
    pixels, images, present_pixels = (torch.zeros(num_classes, dtype=torch.int64) for _ in range(3))
    ignored = count = zero_masks = 0
    loader = DataLoader(
        _RawCounts(masks), batch_size=None, sampler=range(rank, len(masks), processes), num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    error = None
    for i, raw, message in tqdm(loader, desc=desc, file=sys.stderr, disable=None if progress else True, leave=False):
        if message is not None:
            error = (i, message)
            break
        lookup = masks[i][0].lookup
        counts = torch.zeros(256, dtype=torch.int64).index_add_(0, lookup.clamp(min=0).long(), raw)
        here = counts[:num_classes]
        pixels += here
        images += here > 0
        present_pixels += (here > 0) * here.sum()
        ignored, count, zero_masks = ignored + int(counts[IGNORE_INDEX]), count + 1, zero_masks + int(raw[0] > 0)
    stats = ClassStatistics(
        split_key(dataset), list(classes), count, pixels.tolist(), images.tolist(), present_pixels.tolist(), ignored,
        zero_masks,
    )  # fmt: skip
    return stats, error


def class_statistics(dataset: Any, *, progress: bool = True, workers: int = 0) -> ClassStatistics:
    """Count every mask of ``dataset`` (train ids, no transforms): a pass over the split's masks. A mask that
    cannot be read as configured raises the dataset's error."""
    stats, error = count_masks(dataset, workers=workers, progress=progress, desc="class statistics")
    if error is not None:
        raise DatasetError(error[1])
    return stats


def class_weights(stats: ClassStatistics, method: str) -> list[float]:
    """Class weights from the statistics; classes without a pixel in the split get 0 (nothing to balance).

    - ``median_frequency`` (Eigen & Fergus, "Predicting Depth, Surface Normals and Semantic Labels with
      a Common Multi-Scale Convolutional Architecture", ICCV 2015, https://arxiv.org/abs/1411.4734):
      ``w_c = median(f) / f_c``, ``f_c`` = pixels of c / labelled pixels of the images that hold c.
    - ``inverse_sqrt``: ``w_c = 1 / sqrt(p_c)``, ``p_c`` = share of the split's labelled pixels.
    - ``enet_log`` (Paszke, Chaurasia, Kim, Culurciello, "ENet", 2016, https://arxiv.org/abs/1606.02147):
      ``w_c = 1 / ln(1.02 + p_c)``.
    """
    present = [p > 0 for p in stats.pixels]
    if method == "median_frequency":
        freq = [p / t if t else 0.0 for p, t in zip(stats.pixels, stats.present_pixels)]
        median = statistics.median([f for f, here in zip(freq, present) if here]) if any(present) else 0.0
        return [median / f if here else 0.0 for f, here in zip(freq, present)]
    share = stats.pixel_frequency()
    if method == "inverse_sqrt":
        return [1 / math.sqrt(p) if here else 0.0 for p, here in zip(share, present)]
    if method == "enet_log":
        return [1 / math.log(ENET_C + p) if here else 0.0 for p, here in zip(share, present)]
    raise ValueError(f"loss.class_weight: unknown method {method!r}; choose from {list(METHODS)}")


def format_weights(classes: list[str] | tuple[str, ...], weights: list[float]) -> str:
    """``road 0.37, sidewalk 2.1, ...`` for the log."""
    return ", ".join(f"{name} {w:.3g}" for name, w in zip(classes, weights))


def split_statistics(
    name: str, root: str | Path, split: str, dataset_args: dict[str, Any], args_key: str
) -> ClassStatistics:
    """The statistics of ``split`` of dataset ``name`` at ``root`` (``scripts/check_dataset.py --stats``)."""
    dataset = construct(DATASETS[name], args_key, root, split, options=dataset_args)
    return class_statistics(dataset)
