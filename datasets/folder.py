"""Your own data: a folder of images and a folder of masks, classes listed in the config.

    <root>/images/<split>/**/<name>.jpg|.jpeg|.png
    <root>/masks/<split>/**/<name>.png      same relative path; class ids (mode L or P) or colours (RGB)

```yaml
data:
  dataset: folder
  root: /data/my_dataset
  dataset_args:
    classes: [background, crop, weed]   # mask value i is class i
    ignore_value: 255                   # mask value that means "not labelled"
```

Other mask conventions (``reduce_zero_label``, ``label_map``, ``mask_format: rgb``) are described
in ``datasets/conventions.py`` and docs/data.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .base import IGNORE_INDEX, LIMIT_KEY, DatasetError, SegmentationDataset, pair_files, read_color_mask, require_dir
from .conventions import ColorCodes, index_lookup, load_classes

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
    """Images and masks paired by relative path without suffix; masks map to train ids by one convention.

    ``classes``: names (mask value i is ``classes[i]``), ``{name, color}`` entries, or a YAML file of
    either (relative paths are looked up under ``root`` first). ``reduce_zero_label``, ``label_map``
    / ``unlisted`` and ``mask_format: rgb`` / ``ignore_colors`` select the other conventions
    (``datasets/conventions.py``); at most one of them.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        classes: Sequence[Any] | str | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        image_dir: str = "images/{split}",
        mask_dir: str = "masks/{split}",
        ignore_value: int = IGNORE_INDEX,
        reduce_zero_label: bool = False,
        label_map: dict[int, int] | None = None,
        unlisted: str = "error",
        mask_format: str = "index",
        ignore_colors: Sequence[Sequence[int]] = (),
        transforms: Callable[..., Any] | None = None,
        allow_unpaired: bool = False,
    ) -> None:
        names, colors = load_classes(classes, root)
        if palette and colors:
            raise ValueError("palette and class colors both give the classes' colours: keep one")
        if mask_format not in ("index", "rgb"):
            raise ValueError(f"mask_format must be 'index' (class ids) or 'rgb' (colour masks); got {mask_format!r}")
        self.codes = None
        self.convention = (
            "rgb" if mask_format == "rgb" else "reduce_zero_label" if reduce_zero_label
            else "label_map" if label_map is not None else "class ids"
        )  # fmt: skip
        if mask_format == "rgb":
            if reduce_zero_label or label_map is not None:
                raise ValueError("mask_format: rgb maps colours to classes; drop reduce_zero_label / label_map")
            if colors is None:
                raise ValueError(
                    "mask_format: rgb needs the color of every class: "
                    "classes: [{name: road, color: [128, 64, 128]}, ...]"
                )
            self.codes = ColorCodes(colors, ignore_colors)
            lookup = index_lookup(len(names), IGNORE_INDEX)[0]  # codes: class i -> i, ignore colours -> 255
            self.label_help = "colour masks"
        else:
            if ignore_colors:
                raise ValueError("ignore_colors is for mask_format: rgb; with class-id masks set ignore_value")
            lookup, self.label_help = index_lookup(
                len(names), ignore_value, reduce_zero_label=reduce_zero_label, label_map=label_map, unlisted=unlisted
            )
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
        self.classes = names
        self.palette = tuple(tuple(c) for c in palette or colors or default_palette(len(names)))
        if len(self.palette) != len(self.classes):
            raise ValueError(f"palette has {len(self.palette)} colors for {len(self.classes)} classes")
        super().__init__(samples, lookup, transforms=transforms)

    def raw_mask(self, index: int, limit_key: str = LIMIT_KEY) -> torch.Tensor:
        """Colour masks become codes here (class i -> i, ignore colours -> 255), where the lookup starts."""
        if self.codes is None:
            return super().raw_mask(index, limit_key)
        path = self.samples[index][1]
        return self.codes.encode(read_color_mask(path, self.max_pixels, limit_key), path)
