"""Cityscapes, read exactly as it downloads (https://www.cityscapes-dataset.com).

    <root>/leftImg8bit/{train,val,test,train_extra}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
                                                            (or ..._gtFine_labelTrainIds.png)
    <root>/gtCoarse/train_extra/<city>/<city>_<seq>_<frame>_gtCoarse_labelIds.png

The label table is the official one (``cityscapesscripts.helpers.labels``; a test asserts they are
identical): 34 label ids, of which 19 are trained on; every other id maps to 255 (ignore).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

from .base import SegmentationDataset, make_lookup, pair_files, require_dir


class Label(NamedTuple):
    name: str
    id: int
    train_id: int
    category: str
    has_instances: bool
    ignore_in_eval: bool
    color: tuple[int, int, int]


LABELS = (
    Label("unlabeled", 0, 255, "void", False, True, (0, 0, 0)),
    Label("ego vehicle", 1, 255, "void", False, True, (0, 0, 0)),
    Label("rectification border", 2, 255, "void", False, True, (0, 0, 0)),
    Label("out of roi", 3, 255, "void", False, True, (0, 0, 0)),
    Label("static", 4, 255, "void", False, True, (0, 0, 0)),
    Label("dynamic", 5, 255, "void", False, True, (111, 74, 0)),
    Label("ground", 6, 255, "void", False, True, (81, 0, 81)),
    Label("road", 7, 0, "flat", False, False, (128, 64, 128)),
    Label("sidewalk", 8, 1, "flat", False, False, (244, 35, 232)),
    Label("parking", 9, 255, "flat", False, True, (250, 170, 160)),
    Label("rail track", 10, 255, "flat", False, True, (230, 150, 140)),
    Label("building", 11, 2, "construction", False, False, (70, 70, 70)),
    Label("wall", 12, 3, "construction", False, False, (102, 102, 156)),
    Label("fence", 13, 4, "construction", False, False, (190, 153, 153)),
    Label("guard rail", 14, 255, "construction", False, True, (180, 165, 180)),
    Label("bridge", 15, 255, "construction", False, True, (150, 100, 100)),
    Label("tunnel", 16, 255, "construction", False, True, (150, 120, 90)),
    Label("pole", 17, 5, "object", False, False, (153, 153, 153)),
    Label("polegroup", 18, 255, "object", False, True, (153, 153, 153)),
    Label("traffic light", 19, 6, "object", False, False, (250, 170, 30)),
    Label("traffic sign", 20, 7, "object", False, False, (220, 220, 0)),
    Label("vegetation", 21, 8, "nature", False, False, (107, 142, 35)),
    Label("terrain", 22, 9, "nature", False, False, (152, 251, 152)),
    Label("sky", 23, 10, "sky", False, False, (70, 130, 180)),
    Label("person", 24, 11, "human", True, False, (220, 20, 60)),
    Label("rider", 25, 12, "human", True, False, (255, 0, 0)),
    Label("car", 26, 13, "vehicle", True, False, (0, 0, 142)),
    Label("truck", 27, 14, "vehicle", True, False, (0, 0, 70)),
    Label("bus", 28, 15, "vehicle", True, False, (0, 60, 100)),
    Label("caravan", 29, 255, "vehicle", True, True, (0, 0, 90)),
    Label("trailer", 30, 255, "vehicle", True, True, (0, 0, 110)),
    Label("train", 31, 16, "vehicle", True, False, (0, 80, 100)),
    Label("motorcycle", 32, 17, "vehicle", True, False, (0, 0, 230)),
    Label("bicycle", 33, 18, "vehicle", True, False, (119, 11, 32)),
    Label("license plate", -1, -1, "vehicle", False, True, (0, 0, 142)),  # never stored in PNGs
)
TRAIN_LABELS = sorted((label for label in LABELS if 0 <= label.train_id < 255), key=lambda label: label.train_id)
CLASSES = tuple(label.name for label in TRAIN_LABELS)
PALETTE = tuple(label.color for label in TRAIN_LABELS)
LABEL_ID_TO_TRAIN_ID = {label.id: label.train_id for label in LABELS if label.id >= 0}
TRAIN_ID_TO_LABEL_ID = {label.train_id: label.id for label in TRAIN_LABELS}  # for test-server submissions
NAME_TO_LABEL = {label.name: label for label in LABELS}

SPLITS = ("train", "val", "test", "train_extra")
OFFICIAL_COUNTS = {"train": 2975, "val": 500, "test": 1525, "train_extra": 19998}
LAYOUT = """  <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png   (train, val)
  <root>/gtCoarse/train_extra/<city>/..._gtCoarse_labelIds.png            (train_extra only)"""

LabelType = Literal["auto", "labelIds", "labelTrainIds"]


def annotation_folder(split: str) -> str:
    return "gtCoarse" if split == "train_extra" else "gtFine"


def find_images(root: Path, split: str) -> dict[str, Path]:
    """{"<city>/<city>_<seq>_<frame>": path} of the split's images."""
    folder = require_dir(require_dir(Path(root), LAYOUT) / "leftImg8bit" / split, LAYOUT)
    return {f"{p.parent.name}/{p.name[: -len('_leftImg8bit.png')]}": p for p in folder.glob("*/*_leftImg8bit.png")}


def find_masks(root: Path, split: str, label_type: str) -> dict[str, Path]:
    gt = annotation_folder(split)
    folder = require_dir(Path(root) / gt / split, LAYOUT)
    suffix = f"_{gt}_{label_type}.png"
    return {f"{p.parent.name}/{p.name[: -len(suffix)]}": p for p in folder.glob(f"*/*{suffix}")}


class Cityscapes(SegmentationDataset):
    """Cityscapes with the 19 train classes. ``split`` is train, val, test (images only) or train_extra.

    ``label_type``: ``labelIds`` (as downloaded, mapped to train ids here), ``labelTrainIds``
    (pre-converted by ``scripts/prepare_cityscapes.py`` or cityscapesscripts), or ``auto``: train
    ids when every image has them, label ids otherwise.
    """

    classes = CLASSES
    palette = PALETTE

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        transforms: Callable[..., Any] | None = None,
        label_type: LabelType = "auto",
        allow_unpaired: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown Cityscapes split {split!r}; choose from {SPLITS}")
        self.root, self.split = Path(root), split
        images = find_images(self.root, split)
        if not images:
            raise FileNotFoundError(f"no *_leftImg8bit.png images in {self.root / 'leftImg8bit' / split}/<city>/")
        if split == "test":  # test labels are withheld by the benchmark: images only
            self.label_type = None
            super().__init__([(images[k], None) for k in sorted(images)], make_lookup({}), transforms=transforms)
            return
        if label_type == "auto":
            train_ids = find_masks(self.root, split, "labelTrainIds")
            label_type = "labelTrainIds" if train_ids and all(k in train_ids for k in images) else "labelIds"
        if label_type not in ("labelIds", "labelTrainIds"):
            raise ValueError(f"label_type must be auto, labelIds or labelTrainIds, got {label_type!r}")
        self.label_type = label_type
        masks = find_masks(self.root, split, label_type)
        samples = pair_files(images, masks, what=f"Cityscapes {split} ({label_type})", allow_unpaired=allow_unpaired)
        if label_type == "labelIds":
            lookup = make_lookup(LABEL_ID_TO_TRAIN_ID)
            self.label_help = "Cityscapes labelIds are 0..33"
        else:
            lookup = make_lookup({**{i: i for i in range(len(CLASSES))}, 255: 255})
            self.label_help = "Cityscapes labelTrainIds are 0..18 and 255"
        super().__init__(samples, lookup, transforms=transforms)

    def name(self, index: int) -> str:
        return self.samples[index][0].name[: -len("_leftImg8bit.png")]
