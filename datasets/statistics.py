"""Class statistics of a split (pixel and image frequency per class) and the class weights they give.

Training reads them for ``loss.class_weight: {auto: METHOD}`` (cached in the run folder as
``class_statistics.json``, keyed by ``split_key``: a changed file list, class list or label mapping
is counted again); ``scripts/check_dataset.py --stats`` prints and writes them.
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
from torch.utils.data import ConcatDataset
from tqdm import tqdm

from utils.registry import construct

from . import DATASETS
from .base import IGNORE_INDEX, SegmentationDataset

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

    def __str__(self) -> str:
        width = max(len(c) for c in self.classes) if self.classes else 5
        lines = [
            f"{self.num_images} images, {self.labelled_pixels:,} labelled pixels, {self.ignored_pixels:,} ignored",
            f"{'class':<{width}}  {'pixels %':>9}  {'images %':>9}",
        ]
        for name, pixel, image in zip(self.classes, self.pixel_frequency(), self.image_frequency()):
            lines.append(f"{name:<{width}}  {100 * pixel:9.3f}  {100 * image:9.2f}")
        return "\n".join(lines)


def _parts(dataset: Any) -> list[SegmentationDataset]:
    return list(dataset.datasets) if isinstance(dataset, ConcatDataset) else [dataset]


def split_key(dataset: Any) -> str:
    """SHA-256 of what the counts depend on: the mask files in order, the class names and each part's label mapping."""
    h = hashlib.sha256(json.dumps(list(dataset.classes)).encode())
    for part in _parts(dataset):
        h.update(part.lookup.numpy().tobytes())
        for _, mask in part.samples:
            h.update(f"{mask}\n".encode())
    return h.hexdigest()


def class_statistics(dataset: Any, *, progress: bool = True) -> ClassStatistics:
    """Count every mask of ``dataset`` (train ids, no transforms): a pass over the split's masks."""
    num_classes = len(dataset.classes)
    pixels = torch.zeros(num_classes, dtype=torch.int64)
    images = torch.zeros(num_classes, dtype=torch.int64)
    present_pixels = torch.zeros(num_classes, dtype=torch.int64)
    ignored, count = 0, 0
    masks = [(part, i) for part in _parts(dataset) for i in range(len(part))]
    for part, index in tqdm(masks, desc="class statistics", file=sys.stderr, disable=None if progress else True):
        if part.samples[index][1] is None:  # an image without a mask (allow_unpaired)
            continue
        counts = torch.bincount(part.load_mask(index).flatten().long(), minlength=256)
        here = counts[:num_classes]
        pixels += here
        images += here > 0
        present_pixels += (here > 0) * here.sum()
        ignored, count = ignored + int(counts[IGNORE_INDEX]), count + 1
    return ClassStatistics(
        split_key(dataset), list(dataset.classes), count, pixels.tolist(), images.tolist(), present_pixels.tolist(),
        ignored,
    )  # fmt: skip


def cached_statistics(dataset: Any, cache: Path) -> tuple[ClassStatistics, bool]:
    """The statistics in ``cache`` when they are of this split (same ``split_key``), else counted anew.
    Returns them and whether they were counted (the caller writes the cache: nothing is written here)."""
    if cache.is_file():
        try:
            stats = ClassStatistics.from_dict(json.loads(cache.read_text()))
        except (ValueError, KeyError, TypeError):
            stats = None  # an unreadable cache is counted again and replaced
        if stats is not None and stats.split_key == split_key(dataset):
            return stats, False
    return class_statistics(dataset), True


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
