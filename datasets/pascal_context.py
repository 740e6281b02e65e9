"""Pascal Context (Mottaghi et al., CVPR 2014): VOC2010 images with whole-scene labels, as users download it.

    <root>/VOCdevkit/VOC2010/JPEGImages/2008_000002.jpg    (<root>: the folder holding VOCdevkit, or VOC2010)
    PyTorch-Encoding (the code base of the paper's numbers):
        <VOC2010>/train.pth, val.pth    torch-saved {image_id: PIL mask}, image_id 2008000002 for 2008_000002
    MMSegmentation (tools/dataset_converters/pascal_context.py):
        <VOC2010>/SegmentationClassContext/2008_000002.png
        <VOC2010>/ImageSets/SegmentationContext/train.txt, val.txt

Both converters map the 459 labels of ``trainval_merged.json`` to the same 60 values: 0 for
background (everything outside the 59 classes) and 1..59 for the classes in the label ids' order,
which is alphabetical. ``num_classes: 59`` (the usual benchmark, PyTorch-Encoding's ``mask - 1``,
MMSegmentation's ``reduce_zero_label``) ignores background and makes value k train id k - 1;
``num_classes: 60`` keeps background as class 0. ``layout: auto`` reads the ``.pth`` of the split
when present, else MMSegmentation's PNGs. The ``.pth`` files are pickles: load only the ones you
downloaded from PyTorch-Encoding.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .ade20k_classes import PALETTE as ADE20K_PALETTE
from .base import LIMIT_KEY, DatasetError, SegmentationDataset, make_lookup, pair_files, require_dir

CLASSES_60 = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain",
    "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike",
    "mountain", "mouse", "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves",
    "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall",
    "water", "window", "wood",
)  # fmt: skip
# MMSegmentation's colours: the ADE20K palette's first 60; two classes share [140, 140, 140] there.
PALETTE_60 = ADE20K_PALETTE[:60]
SPLITS = ("train", "val")
OFFICIAL_COUNTS = {"train": 4998, "val": 5105}
LAYOUT = """  <root>/VOCdevkit/VOC2010/JPEGImages/2008_000002.jpg  (<root>: the folder holding VOCdevkit, or VOC2010)
  and the masks, either PyTorch-Encoding's <VOC2010>/{train,val}.pth
  or MMSegmentation's <VOC2010>/SegmentationClassContext/*.png + ImageSets/SegmentationContext/{train,val}.txt"""


def class_info(num_classes: int) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """(names, palette) of the 59-class (background ignored) or 60-class variant."""
    if num_classes not in (59, 60):
        raise ValueError(f"num_classes must be 59 (background ignored) or 60 (background a class); got {num_classes!r}")
    first = 60 - num_classes
    return CLASSES_60[first:], PALETTE_60[first:]


def image_name(image_id: int) -> str:
    """PyTorch-Encoding's mask key -> the VOC file name: 2008000002 -> 2008_000002."""
    return f"{image_id // 1_000_000}_{image_id % 1_000_000:06d}"


def resolve_root(root: str | Path) -> Path:
    """The VOC2010 folder, given it or a folder above it (VOCdevkit's parent or VOCdevkit)."""
    root = require_dir(Path(root), LAYOUT)
    for candidate in (root, root / "VOC2010", root / "VOCdevkit" / "VOC2010"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    return require_dir(root / "VOCdevkit" / "VOC2010" / "JPEGImages", LAYOUT).parent


class PascalContext(SegmentationDataset):
    """Pascal Context, 59 classes (background ignored) or 60; ``split`` is ``train`` or ``val``."""

    classes, palette = class_info(59)
    miou_over_all_classes = True  # PyTorch-Encoding's metric averages every class (absent ones as 0)

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        num_classes: int = 59,
        layout: str = "auto",
        transforms: Callable[..., Any] | None = None,
        allow_unpaired: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown Pascal Context split {split!r}; choose from {list(SPLITS)}")
        if layout not in ("auto", "encoding", "mmseg"):
            raise ValueError(f"layout must be auto, encoding (the .pth masks) or mmseg (the PNG masks); got {layout!r}")
        self.classes, self.palette = class_info(num_classes)
        self.root, self.split = resolve_root(root), split
        pth = self.root / f"{split}.pth"
        self.layout = ("encoding" if pth.is_file() else "mmseg") if layout == "auto" else layout
        self.masks: dict[int, Any] = {}  # PyTorch-Encoding's layout: {image_id: PIL mask}, and ids by file name
        self.ids: dict[str, int] = {}
        if self.layout == "encoding":
            if not pth.is_file():
                raise FileNotFoundError(f"{pth} not found (PyTorch-Encoding's masks); expected layout:\n{LAYOUT}")
            self.masks = torch.load(pth, weights_only=False)  # a pickle of PIL images, as PyTorch-Encoding saves it
            self.ids = {image_name(int(i)): i for i in self.masks}
            names, masks = sorted(self.ids), dict.fromkeys(self.ids, pth)
        else:
            listing = require_dir(self.root / "ImageSets" / "SegmentationContext", LAYOUT) / f"{split}.txt"
            if not listing.is_file():
                raise FileNotFoundError(
                    f"{listing} not found (MMSegmentation's split list); expected layout:\n{LAYOUT}"
                )
            names = listing.read_text().split()
            mask_dir = require_dir(self.root / "SegmentationClassContext", LAYOUT)
            masks = {n: mask_dir / f"{n}.png" for n in names if (mask_dir / f"{n}.png").is_file()}
        image_dir = require_dir(self.root / "JPEGImages", LAYOUT)
        images = {n: image_dir / f"{n}.jpg" for n in names if (image_dir / f"{n}.jpg").is_file()}
        lost = [n for n in names if n not in images and n not in masks]
        if lost:
            raise DatasetError(
                f"Pascal Context {split}: {len(lost)} listed images have neither image nor mask, e.g. {lost[:5]}"
            )
        samples = pair_files(images, masks, what=f"Pascal Context {split}", allow_unpaired=allow_unpaired)
        first = 60 - num_classes  # 59 classes: value k -> k - 1, background (0) ignored
        lookup = make_lookup({value: value - first if value >= first else 255 for value in range(60)})
        self.label_help = f"Pascal Context masks hold 0 (background) and 1..59 ({self.layout} layout)"
        super().__init__(samples, lookup, transforms=transforms)

    def raw_mask(self, index: int, limit_key: str = LIMIT_KEY) -> torch.Tensor:
        """PyTorch-Encoding's masks come from the loaded ``.pth``; MMSegmentation's from their PNGs."""
        if self.layout != "encoding":
            return super().raw_mask(index, limit_key)
        image_path, pth = self.samples[index]
        array = np.array(self.masks[self.ids[image_path.stem]])
        if array.ndim != 2 or array.dtype != np.uint8:
            raise DatasetError(f"{pth}: the mask of {image_path.stem} is not a single-channel 8-bit image")
        return torch.from_numpy(array)
