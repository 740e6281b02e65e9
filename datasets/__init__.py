"""Datasets: ``build_dataset(cfg, split)`` turns the ``data`` section of a config into a dataset.

``DATASETS`` is the plain name -> class table ``data.dataset`` picks from. Every dataset returns
``{"image", "mask", "name"}`` samples with masks in train ids (255 = ignore), and carries its
``classes`` and ``palette``.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import ConcatDataset, Dataset

from utils.config import config_from_dict
from utils.registry import construct, lookup

from . import pascal_context
from .ade20k import ADE20K
from .base import IGNORE_INDEX, DatasetError, SegmentationDataset
from .cityscapes import Cityscapes
from .conventions import load_classes
from .corruptions import CorruptedDataset, Corruption
from .folder import FolderDataset, default_palette
from .pascal_context import PascalContext
from .transforms import eval_transforms, train_transforms

DATASETS = {
    "ade20k": ADE20K,
    "cityscapes": Cityscapes,
    "folder": FolderDataset,
    "pascal_context": PascalContext,
}

__all__ = [
    "ADE20K",
    "DATASETS",
    "IGNORE_INDEX",
    "Cityscapes",
    "Corruption",
    "DatasetError",
    "FolderDataset",
    "PascalContext",
    "SegmentationDataset",
    "build_dataset",
    "class_info",
    "stored_class_info",
]


def class_info(cfg: Any) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """(class names, palette) of the configured dataset, without reading the dataset from disk."""
    data = cfg.data
    cls = lookup(DATASETS, data.dataset, "data.dataset")
    if cls is FolderDataset:
        classes, colors = load_classes(data.dataset_args.get("classes"), data.root)
        palette = data.dataset_args.get("palette") or colors or default_palette(len(classes))
        return classes, tuple(tuple(c) for c in palette)
    if cls is PascalContext:
        return pascal_context.class_info(data.dataset_args.get("num_classes", 59))
    return cls.classes, cls.palette


def stored_class_info(checkpoint: dict[str, Any]) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]] | None:
    """(class names, palette) of a checkpoint: its ``"classes"`` and ``"palette"`` (train.py stores them), else,
    for a checkpoint written before they were stored, those of the dataset its config names (``class_info``),
    when they fit its class count; None when it has neither."""
    if checkpoint.get("classes"):
        classes = tuple(checkpoint["classes"])
        palette = checkpoint.get("palette") or default_palette(len(classes))
        return classes, tuple(tuple(c) for c in palette)
    try:
        cfg = config_from_dict(checkpoint["config"], "the checkpoint's config")
        classes, palette = class_info(cfg)
    except (KeyError, TypeError, ValueError):  # no config, or one today's schema no longer reads
        return None
    return (classes, palette) if classes and len(classes) == cfg.model.num_classes else None


def build_dataset(cfg: Any, split: str, *, train: bool | None = None, corruption: Corruption | None = None) -> Dataset:
    """The dataset of ``split`` (several joined by "+") with training or evaluation transforms.

    ``corruption``: each image corrupted as read, before the transforms (``datasets/corruptions.py``).

    ``train`` defaults to ``split == cfg.data.train_split``. The number of classes must equal
    ``cfg.model.num_classes``: a model built for another label space is the silent failure this
    check prevents. Images over ``cfg.data.max_image_pixels`` pixels are refused when read.
    """
    data = cfg.data
    train = split == data.train_split if train is None else train
    if train:
        transforms = train_transforms(**vars(data.augment), mean=data.mean, std=data.std)
    else:
        transforms = eval_transforms(mean=data.mean, std=data.std)
    cls = lookup(DATASETS, data.dataset, "data.dataset")
    # a config switched with data.dataset=... keeps the first dataset's dataset_args
    left_over = f"left from another dataset? With data.dataset={data.dataset}, set data.dataset_args={{}} or only those"
    parts = [
        construct(
            cls, "data.dataset_args", data.root, name, transforms=None if corruption else transforms,
            options=data.dataset_args, unknown_hint=left_over,
        )
        for name in split.split("+")
    ]  # fmt: skip
    for part in parts:
        part.max_pixels = data.max_image_pixels
    dataset = parts[0] if len(parts) == 1 else _Concat(parts)
    if len(dataset.classes) != cfg.model.num_classes:
        raise DatasetError(
            f"data: {data.dataset} at {data.root} has {len(dataset.classes)} classes but model.num_classes is "
            f"{cfg.model.num_classes}; set model.num_classes={len(dataset.classes)}"
        )
    return dataset if corruption is None else CorruptedDataset(dataset, corruption, transforms)


class _Concat(ConcatDataset):
    """Several splits of one dataset, keeping its ``classes`` and ``palette``."""

    def __init__(self, parts: list[SegmentationDataset]) -> None:
        super().__init__(parts)
        self.classes, self.palette = parts[0].classes, parts[0].palette
