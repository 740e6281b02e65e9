"""Pascal Context on the synthetic world's copy in both layouts (PyTorch-Encoding's .pth, MMSegmentation's
PNGs): train ids against a reference mapping written here, the 59 / 60 class variants, the doctor, the configs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from datasets import DatasetError, PascalContext, build_dataset, class_info
from datasets.doctor import check_dataset
from datasets.pascal_context import CLASSES_60, PALETTE_60, image_name
from datasets.synthetic import FOLDER_IDS, make_scene, write_pascal_context
from utils.config import load_config

# The file value (0 background, 1..59) of each world class, as both converters number Pascal Context's
# classes (alphabetically, by label id): written out here, not computed from the loader's table.
FILE_VALUE = {
    "road": 41, "sidewalk": 45, "building": 11, "wall": 56, "fence": 25, "pole": 0, "traffic sign": 46,
    "vegetation": 53, "terrain": 29, "sky": 47, "car": 14, "ego vehicle": 0,
}  # fmt: skip
SIZE = (40, 56)


@pytest.fixture(scope="module")
def pcontext(tmp_path_factory):
    root = tmp_path_factory.mktemp("pcontext")
    write_pascal_context(root, {"train": 3, "val": 2}, SIZE, seed=0)
    return root


def expected_file_values(split_index: int, i: int) -> np.ndarray:
    world = make_scene([0, split_index, i], *SIZE).labels(FOLDER_IDS)  # world class ids, 255 = ego vehicle
    names = {v: k for k, v in FOLDER_IDS.items()}
    return np.array([[FILE_VALUE[names[int(v)]] for v in row] for row in world], np.uint8)


def test_class_names_and_palette_are_mmsegmentations():
    assert len(CLASSES_60) == 60 and CLASSES_60[0] == "background"
    assert [CLASSES_60[v] for v in (11, 14, 25, 29, 41, 45, 46, 47, 53, 56)] == [
        "building", "car", "fence", "grass", "road", "sidewalk", "sign", "sky", "tree", "wall",
    ]  # fmt: skip
    assert CLASSES_60[1:4] == ("aeroplane", "bag", "bed") and CLASSES_60[-1] == "wood"
    assert PALETTE_60[0] == (120, 120, 120) and PALETTE_60[59] == (31, 0, 255)
    assert image_name(2008000002) == "2008_000002"


@pytest.mark.parametrize("layout", ["encoding", "mmseg"])
def test_both_layouts_give_the_reference_train_ids_for_59_and_60_classes(pcontext, layout):
    for split_index, split in enumerate(["train", "val"]):
        reduced = PascalContext(pcontext, split, layout=layout)
        full = PascalContext(pcontext, split, layout=layout, num_classes=60)
        assert reduced.layout == layout and len(reduced) == [3, 2][split_index]
        assert reduced.classes == CLASSES_60[1:] and full.classes == CLASSES_60 and full.palette == PALETTE_60
        for i in range(len(reduced)):
            values = expected_file_values(split_index, i)
            assert reduced[i]["name"] == f"{2008 + split_index}_{i:06d}"
            # 59 classes: background (0) ignored, value k -> train id k - 1; 60: the file values themselves
            assert np.array_equal(reduced[i]["mask"].numpy(), np.where(values == 0, 255, values - 1))
            assert np.array_equal(full[i]["mask"].numpy(), values)


def test_layout_auto_and_the_root_at_any_level(pcontext, tmp_path):
    for root in (pcontext, pcontext / "VOCdevkit", pcontext / "VOCdevkit/VOC2010"):
        assert PascalContext(root, "val").layout == "encoding"  # the .pth is the paper's code base's layout
    root = tmp_path / "mmseg_only"
    shutil.copytree(pcontext, root)
    (root / "VOCdevkit/VOC2010/val.pth").unlink()
    assert PascalContext(root, "val").layout == "mmseg"
    with pytest.raises(FileNotFoundError, match=r"val.pth not found \(PyTorch-Encoding's masks\)"):
        PascalContext(root, "val", layout="encoding")


def test_the_doctor_passes_the_copy_and_catches_reduced_masks(pcontext, tmp_path):
    for layout in ("encoding", "mmseg"):
        report = check_dataset("pascal_context", pcontext, dataset_args={"layout": layout})
        assert report.ok, str(report)
        assert "train: 3 images (official: 4998)" in report.lines and "val: 2 images (official: 5105)" in report.lines
    root = tmp_path / "reduced"
    shutil.copytree(pcontext, root)
    for path in root.glob("VOCdevkit/VOC2010/SegmentationClassContext/*.png"):
        values = np.asarray(Image.open(path))
        Image.fromarray((values.astype(np.int16) - 1).astype(np.uint8)).save(path)  # 0 -> 255, k -> k - 1
    report = check_dataset("pascal_context", root, dataset_args={"layout": "mmseg"})
    assert not report.ok and "masks look already reduced to 0..58 with 255" in report.problems[0]


def test_encoding_masks_and_images_must_pair(pcontext, tmp_path):
    root = tmp_path / "unpaired"
    shutil.copytree(pcontext, root)
    (root / "VOCdevkit/VOC2010/JPEGImages/2008_000001.jpg").unlink()
    with pytest.raises(DatasetError, match=r"(?s)Pascal Context train: 1 masks without an image.*train.pth"):
        PascalContext(root, "train")
    assert len(PascalContext(root, "train", allow_unpaired=True)) == 2
    masks = torch.load(root / "VOCdevkit/VOC2010/val.pth", weights_only=False)
    masks[2009000000] = masks[2009000000].convert("RGB")
    torch.save(masks, root / "VOCdevkit/VOC2010/val.pth")
    with pytest.raises(DatasetError, match=r"val.pth: the mask of 2009_000000 is not a single-channel 8-bit image"):
        PascalContext(root, "val")[0]


def test_configs_build_the_dataset_and_check_the_class_count(pcontext):
    cfg = load_config(ROOT / "configs/pascal_context/spnet_r101.yaml", [f"data.root={pcontext}"])
    assert cfg.model.num_classes == 59 and cfg.model.backbone.depth == 101
    assert class_info(cfg) == (CLASSES_60[1:], PALETTE_60[1:])
    assert len(build_dataset(cfg, "val")) == 2
    sixty = load_config(
        ROOT / "configs/pascal_context/spnet_r50.yaml", [f"data.root={pcontext}", "data.dataset_args.num_classes=60"]
    )
    assert class_info(sixty) == (CLASSES_60, PALETTE_60)
    with pytest.raises(DatasetError, match=r"has 60 classes but model.num_classes is 59; set model.num_classes=60"):
        build_dataset(sixty, "val")
    with pytest.raises(ValueError, match=r"num_classes must be 59 \(background ignored\) or 60"):
        PascalContext(pcontext, "val", num_classes=58)


def test_the_table_prints_the_listed_number_with_its_source(tmp_path):
    from engine import paper_results, paper_tables

    records, _ = paper_tables.table_records("pascal_context", tmp_path)
    assert [(r["row"], r["paper_miou"]) for r in records] == [("SPNet R50", None), ("SPNet R101", 54.5)]
    assert records[1]["paper_note"] == paper_results.LISTINGS  # benchmark listings, not the paper
    markdown = paper_tables.render("pascal_context", tmp_path, "markdown")
    assert "54.5 is not read in the paper" in markdown and "not read in the paper itself" in markdown
