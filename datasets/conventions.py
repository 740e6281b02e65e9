"""How the values stored in a folder dataset's masks become train ids: the label conventions.

Masks come in four conventions (``data.dataset_args`` of ``folder``):

- class ids (the default): mask value i is class i, ``ignore_value`` is ignored;
- ``reduce_zero_label: true``: 0 is "unlabelled" (ignored), value k is class k - 1 (ADE20K, Pascal Context 59);
- ``label_map: {raw value: train id}``: any ids, e.g. Cityscapes-like ids; values not in the map are an
  error or ignored (``unlisted: error | ignore``);
- ``mask_format: rgb``: colour masks, each class's colour given beside its name in ``classes``;
  ``ignore_colors`` lists colours that mean "unlabelled".

Every convention becomes the one 256-entry lookup table the datasets already use. Colour masks are
first encoded to 8-bit codes (class i -> i, ignore colours -> 255) through a table indexed by the
packed colour, so no convention loops over pixels in Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .base import IGNORE_INDEX, DatasetError, make_lookup

CLASSES_HELP = (
    "classes=[background, crop, weed], or with colours [{name: road, color: [128, 64, 128]}, ...], "
    "or the path of a .yaml file holding such a list"
)


def load_classes(
    classes: Any, root: str | Path | None = None
) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...] | None]:
    """(names, colours or None) from a list of names, a list of {name, color}, or a .yaml/.json file of either.

    A relative file path is looked up under ``root`` (the dataset folder) first. Colours must be
    given for every class or for none, and no two classes may share one.
    """
    if isinstance(classes, (str, Path)) and Path(classes).suffix.lower() in (".yaml", ".yml", ".json"):
        path = Path(classes)
        if not path.is_absolute() and root is not None and (Path(root) / path).is_file():
            path = Path(root) / path
        if not path.is_file():
            raise FileNotFoundError(f"classes file not found: {path}; {CLASSES_HELP}")
        try:
            classes = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"classes file {path} is not valid YAML: {getattr(err, 'problem', None) or err}") from err
    if not isinstance(classes, (list, tuple)) or not 1 <= len(classes) <= 255:
        got = f"{len(classes)} names" if isinstance(classes, (list, tuple)) else repr(classes)
        raise ValueError(
            f"classes must list 1 to 255 class names, mask value i being classes[i], e.g. {CLASSES_HELP}; got {got}"
        )
    names, colors = [], []
    for i, item in enumerate(classes):
        if isinstance(item, dict):
            if set(item) - {"name", "color"} or "name" not in item:
                raise ValueError(f"classes[{i}] = {item}: a class is a name or {{name: ..., color: [r, g, b]}}")
            names.append(str(item["name"]))
            if "color" in item:
                colors.append(_color(item["color"], f"classes[{i}] ({item['name']}) color"))
        else:
            names.append(str(item))
    if colors and len(colors) != len(names):
        raise ValueError(f"classes: {len(colors)} of {len(names)} classes have a color; give every class one, or none")
    if colors:
        _refuse_shared_colors(colors, names)
    return tuple(names), tuple(colors) or None


def _color(value: Any, what: str) -> tuple[int, int, int]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)
    ):
        raise ValueError(f"{what} must be [r, g, b] with integers 0..255; got {value!r}")
    return tuple(value)


def _refuse_shared_colors(colors: Sequence[tuple[int, int, int]], names: Sequence[str]) -> None:
    first: dict[tuple[int, int, int], str] = {}
    for color, name in zip(colors, names, strict=True):
        if color in first:
            raise ValueError(
                f"classes: color {list(color)} is given to both {first[color]!r} and {name!r}; a mask pixel of that "
                "color could be either class: give each class its own color"
            )
        first[color] = name


def index_lookup(
    num_classes: int,
    ignore_value: int,
    *,
    reduce_zero_label: bool = False,
    label_map: Mapping[Any, Any] | None = None,
    unlisted: str = "error",
) -> tuple[torch.Tensor, str]:
    """The lookup table of single-channel masks under one convention, and the help line of its errors."""
    if unlisted not in ("error", "ignore"):
        raise ValueError(
            f"unlisted must be 'error' or 'ignore' (what a mask value missing from label_map becomes); got {unlisted!r}"
        )
    if label_map is not None:
        if reduce_zero_label:
            raise ValueError("label_map and reduce_zero_label both map mask values: put 0: 255 in label_map instead")
        mapping = _checked_label_map(label_map, num_classes)
        if ignore_value in mapping and mapping[ignore_value] != IGNORE_INDEX:
            raise ValueError(
                f"label_map maps ignore_value {ignore_value} to class {mapping[ignore_value]}; "
                "set ignore_value to another value"
            )
        mapping.setdefault(ignore_value, IGNORE_INDEX)
        table = make_lookup(mapping)
        if unlisted == "ignore":
            table[table < 0] = IGNORE_INDEX
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(mapping.items())[:8])
        more = ", ..." if len(mapping) > 8 else ""
        return table, f"label_map lists {{{shown}{more}}}; set unlisted: ignore to ignore other values"
    first = 1 if reduce_zero_label else 0
    if not 0 <= ignore_value <= 255 or first <= ignore_value < num_classes + first:
        allowed = f"{num_classes}..255" if first == 0 else f"0 or {num_classes + 1}..255"
        raise ValueError(f"ignore_value {ignore_value} must be in {allowed} (not a class value)")
    mapping = {value: value - first for value in range(first, num_classes + first)}
    if reduce_zero_label:
        mapping[0] = IGNORE_INDEX
        help_line = (
            f"reduce_zero_label: expected 0 (ignored), class values 1..{num_classes} and ignore_value {ignore_value}"
        )
    else:
        help_line = f"expected class ids 0..{num_classes - 1} and ignore_value {ignore_value}"
    return make_lookup({**mapping, ignore_value: IGNORE_INDEX}), help_line


def _checked_label_map(label_map: Mapping[Any, Any], num_classes: int) -> dict[int, int]:
    if not isinstance(label_map, Mapping) or not label_map:
        raise ValueError(
            f"label_map must be a mapping {{raw mask value: train id}}, e.g. {{7: 0, 8: 1, 0: 255}}; got {label_map!r}"
        )
    out = {}
    for raw, train_id in label_map.items():
        if not isinstance(raw, int) or not 0 <= raw <= 255:
            raise ValueError(f"label_map key {raw!r} must be a mask value 0..255")
        if not isinstance(train_id, int) or not (0 <= train_id < num_classes or train_id == IGNORE_INDEX):
            raise ValueError(f"label_map[{raw}] = {train_id!r} must be a train id 0..{num_classes - 1} or 255 (ignore)")
        out[raw] = train_id
    return out


class ColorCodes:
    """Encodes RGB masks to 8-bit codes: the colour of class i -> i, an ignore colour -> 255.

    Colours are packed as ``r << 16 | g << 8 | b`` and looked up in a 2**24-entry uint8 table (16 MB,
    built once, shared by forked DataLoader workers): one gather per pixel, 2.4x faster than a binary
    search over the sorted palette (docs/data.md). ``UNKNOWN`` marks colours in neither list: an error
    naming the file, the colour and its pixel count.
    """

    UNKNOWN = 254  # so colour masks hold at most 254 classes

    def __init__(self, colors: Sequence[tuple[int, int, int]], ignore_colors: Sequence[Any] = ()) -> None:
        if len(colors) > self.UNKNOWN:
            raise ValueError(f"mask_format: rgb takes at most {self.UNKNOWN} classes; got {len(colors)}")
        ignore = [_color(c, f"ignore_colors[{i}]") for i, c in enumerate(ignore_colors)]
        clash = sorted(set(ignore) & set(colors))
        if clash:
            raise ValueError(f"ignore_colors {list(clash[0])} is also a class's color; remove it from one of the two")
        self.colors, self.ignore_colors = [list(c) for c in colors], [list(c) for c in ignore]  # what the table maps
        self.table = np.full(1 << 24, self.UNKNOWN, dtype=np.uint8)
        for code, color in [*enumerate(colors), *((IGNORE_INDEX, c) for c in ignore)]:
            self.table[_pack(color)] = code

    def encode(self, rgb: np.ndarray, path: Path) -> torch.Tensor:
        """(H, W, 3) uint8 -> (H, W) uint8 codes."""
        bgr0 = np.zeros((*rgb.shape[:2], 4), np.uint8)
        bgr0[..., :3] = rgb[..., ::-1]
        packed = bgr0.view("<u4")[..., 0]  # little-endian bytes b, g, r, 0: r << 16 | g << 8 | b
        codes = self.table[packed]
        unknown = codes == self.UNKNOWN
        if unknown.any():
            colors, counts = np.unique(packed[unknown], return_counts=True)
            order = np.argsort(-counts, kind="stable")[:5]
            shown = ", ".join(f"{list(_unpack(int(colors[i])))} in {int(counts[i]):,} pixels" for i in order)
            more = f" (and {len(colors) - 5} more colors)" if len(colors) > 5 else ""
            raise DatasetError(
                f"{path}: mask color(s) not in the class colors: {shown}{more}. Give the class its color in "
                "data.dataset_args.classes, or list the color in data.dataset_args.ignore_colors"
            )
        return torch.from_numpy(codes)


def _pack(color: Sequence[int]) -> int:
    return (color[0] << 16) | (color[1] << 8) | color[2]


def _unpack(packed: int) -> tuple[int, int, int]:
    return (packed >> 16) & 255, (packed >> 8) & 255, packed & 255
