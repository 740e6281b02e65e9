"""ADE20K SceneParsing (MIT, http://sceneparsing.csail.mit.edu), read as it downloads.

    ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_XXXXXXXX.jpg
    ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_XXXXXXXX.png

Annotations store 0 for "other" and 1..150 for the classes: 0 becomes ignore (255), k becomes
train id k - 1, as in the official devkit and the SPNet / PyTorch-Encoding / MMSegmentation code.
``data.root`` may be the ADEChallengeData2016 folder or its parent.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .ade20k_classes import CLASSES, PALETTE
from .base import SegmentationDataset, make_lookup, pair_files, require_dir

SPLITS = {"train": "training", "val": "validation"}
OFFICIAL_COUNTS = {"train": 20210, "val": 2000}
LAYOUT = """  <root>/images/training/ADE_train_00000001.jpg        (<root> = ADEChallengeData2016 or its parent)
  <root>/images/validation/ADE_val_00000001.jpg
  <root>/annotations/{training,validation}/ADE_..._XXXXXXXX.png"""
LOOKUP = make_lookup({0: 255, **{k: k - 1 for k in range(1, len(CLASSES) + 1)}})


def resolve_root(root: str | Path) -> Path:
    """The ADEChallengeData2016 folder, given it or its parent."""
    root = require_dir(Path(root), LAYOUT)
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    return root


class ADE20K(SegmentationDataset):
    """ADE20K with 150 classes; ``split`` is ``train`` (images/training) or ``val`` (images/validation)."""

    classes = CLASSES
    palette = PALETTE
    label_help = "ADE20K annotations are 0 (other, ignored) and 1..150"
    miou_over_all_classes = True  # the scene-parsing devkit averages over all 150 classes

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transforms: Callable[..., Any] | None = None,
        allow_unpaired: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown ADE20K split {split!r}; choose from {sorted(SPLITS)}")
        self.root, self.split = resolve_root(root), split
        image_dir = require_dir(self.root / "images" / SPLITS[split], LAYOUT)
        mask_dir = require_dir(self.root / "annotations" / SPLITS[split], LAYOUT)
        images = {p.stem: p for p in image_dir.glob("*.jpg")}
        if not images:
            raise FileNotFoundError(f"no .jpg images in {image_dir}")
        masks = {p.stem: p for p in mask_dir.glob("*.png")}
        samples = pair_files(images, masks, what=f"ADE20K {split}", allow_unpaired=allow_unpaired)
        super().__init__(samples, LOOKUP, transforms=transforms)
