"""Your own data: a folder of images and a folder of masks, classes listed in the config.

    <root>/images/<split>/**/<name>.jpg|.jpeg|.png
    <root>/masks/<split>/**/<name>.png      single-channel class ids (mode L or P), same relative path

```yaml
data:
  dataset: folder
  root: /data/my_dataset
  dataset_args:
    classes: [background, crop, weed]   # mask value i is class i
    ignore_value: 255                   # mask value that means "not labelled"
```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .base import IGNORE_INDEX, SegmentationDataset, make_lookup, pair_files, require_dir

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct colors by the bit-interleaving scheme of the PASCAL VOC devkit."""
    palette = []
    for index in range(num_classes):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.append((r, g, b))
    return tuple(palette)


class FolderDataset(SegmentationDataset):
    """Images and masks paired by relative path without suffix; mask value i is ``classes[i]``."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        classes: Sequence[str],
        palette: Sequence[Sequence[int]] | None = None,
        image_dir: str = "images/{split}",
        mask_dir: str = "masks/{split}",
        ignore_value: int = IGNORE_INDEX,
        transforms: Callable[..., Any] | None = None,
        allow_unpaired: bool = False,
    ) -> None:
        if not classes or len(classes) > 255:
            raise ValueError(f"classes must list 1 to 255 class names, got {len(classes or [])}")
        if not 0 <= ignore_value <= 255 or ignore_value < len(classes):
            raise ValueError(f"ignore_value {ignore_value} must be in {len(classes)}..255 (not a class id)")
        image_folder, mask_folder = image_dir.format(split=split), mask_dir.format(split=split)
        layout = f"  <root>/{image_folder}/<name>.jpg\n  <root>/{mask_folder}/<name>.png"
        self.root, self.split = require_dir(Path(root), layout), split
        images_root = require_dir(self.root / image_folder, layout)
        masks_root = require_dir(self.root / mask_folder, layout)
        images = {
            str(p.relative_to(images_root).with_suffix("")): p
            for p in sorted(images_root.rglob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES
        }
        if not images:
            raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {images_root}")
        masks = {str(p.relative_to(masks_root).with_suffix("")): p for p in masks_root.rglob("*.png")}
        samples = pair_files(images, masks, what=f"folder dataset {split}", allow_unpaired=allow_unpaired)
        self.classes = tuple(classes)
        self.palette = tuple(tuple(c) for c in palette) if palette else default_palette(len(classes))
        if len(self.palette) != len(self.classes):
            raise ValueError(f"palette has {len(self.palette)} colors for {len(self.classes)} classes")
        self.label_help = f"expected class ids 0..{len(classes) - 1} and ignore_value {ignore_value}"
        lookup = make_lookup({**{i: i for i in range(len(classes))}, ignore_value: IGNORE_INDEX})
        super().__init__(samples, lookup, transforms=transforms)
