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

from .base import IGNORE_INDEX, DatasetError, SegmentationDataset, make_lookup, pair_files, require_dir

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_SUFFIXES = (".png",)


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


def files_by_name(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """{path relative to ``folder`` without suffix: file} for the files with one of ``suffixes`` (any case).

    Images and masks pair by that name, so two files of one name (``a.jpg`` and ``a.png``) are an
    error: keeping either would pair the mask with a guess.
    """
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in suffixes and path.is_file():
            found.setdefault(str(path.relative_to(folder).with_suffix("")), []).append(path)
    clashes = [paths for paths in found.values() if len(paths) > 1]
    if clashes:
        shown = "\n  ".join(" and ".join(map(str, paths)) for paths in clashes[:5])
        raise DatasetError(
            f"{len(clashes)} name(s) under {folder} have several files, e.g.\n  {shown}\n"
            "Images and masks pair by their path without the suffix: rename or remove all but one file of each name."
        )
    return {name: paths[0] for name, paths in found.items()}


class FolderDataset(SegmentationDataset):
    """Images and masks paired by relative path without suffix; mask value i is ``classes[i]``."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        image_dir: str = "images/{split}",
        mask_dir: str = "masks/{split}",
        ignore_value: int = IGNORE_INDEX,
        transforms: Callable[..., Any] | None = None,
        allow_unpaired: bool = False,
    ) -> None:
        if not isinstance(classes, (list, tuple)) or not 1 <= len(classes) <= 255:
            got = f"{len(classes)} names" if isinstance(classes, (list, tuple)) else repr(classes)
            raise ValueError(
                "classes must list 1 to 255 class names, mask value i being classes[i], e.g. "
                f"classes=[background, crop, weed]; got {got}"
            )
        if not 0 <= ignore_value <= 255 or ignore_value < len(classes):
            raise ValueError(f"ignore_value {ignore_value} must be in {len(classes)}..255 (not a class id)")
        image_folder, mask_folder = image_dir.format(split=split), mask_dir.format(split=split)
        layout = f"  <root>/{image_folder}/<name>.jpg\n  <root>/{mask_folder}/<name>.png"
        self.root, self.split = require_dir(Path(root), layout), split
        images_root = require_dir(self.root / image_folder, layout)
        masks_root = require_dir(self.root / mask_folder, layout)
        images = files_by_name(images_root, IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {images_root}")
        masks = files_by_name(masks_root, MASK_SUFFIXES)
        samples = pair_files(images, masks, what=f"folder dataset {split}", allow_unpaired=allow_unpaired)
        self.classes = tuple(classes)
        self.palette = tuple(tuple(c) for c in palette) if palette else default_palette(len(classes))
        if len(self.palette) != len(self.classes):
            raise ValueError(f"palette has {len(self.palette)} colors for {len(self.classes)} classes")
        self.label_help = f"expected class ids 0..{len(classes) - 1} and ignore_value {ignore_value}"
        lookup = make_lookup({**{i: i for i in range(len(classes))}, ignore_value: IGNORE_INDEX})
        super().__init__(samples, lookup, transforms=transforms)
