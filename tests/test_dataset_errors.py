"""Bad input: every failure names the file (or the expected layout) and the fix; nothing is silently skipped."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from datasets import ADE20K, Cityscapes, DatasetError, FolderDataset
from datasets.synthetic import CLASSES as WORLD_CLASSES


@pytest.fixture
def tree(synthetic_cityscapes, tmp_path):
    root = tmp_path / "cs"
    shutil.copytree(synthetic_cityscapes, root)
    return root


def test_missing_root_and_split_show_the_layout(tmp_path, synthetic_ade20k):
    with pytest.raises(
        DatasetError, match=r"(?s)folder not found: .*nowhere.*Expected layout:.*leftImg8bit/<split>/<city>"
    ):
        Cityscapes(tmp_path / "nowhere", "train")
    (tmp_path / "cs" / "leftImg8bit").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"folder not found: .*leftImg8bit/val"):
        Cityscapes(tmp_path / "cs", "val")
    with pytest.raises(
        DatasetError, match=r"(?s)folder not found: .*images/training.*ADEChallengeData2016 or its parent"
    ):
        ADE20K(tmp_path, "train")


def test_images_without_masks_are_listed_with_a_count(tree):
    removed = sorted((tree / "gtFine/train").glob("*/*_labelIds.png"))[:2]
    for path in removed:
        path.unlink()
    with pytest.raises(DatasetError) as err:
        Cityscapes(tree, "train")
    message = str(err.value)
    assert "2 images without a mask" in message and "allow_unpaired: true" in message
    assert removed[0].name.replace("gtFine_labelIds", "leftImg8bit") in message
    assert len(Cityscapes(tree, "train", allow_unpaired=True)) == 4


def test_masks_without_images_are_listed(tree):
    orphan = sorted((tree / "leftImg8bit/val").glob("*/*.png"))[0]
    orphan.unlink()
    with pytest.raises(DatasetError, match=r"(?s)1 masks without an image, e.g.\n  .*_gtFine_labelIds.png"):
        Cityscapes(tree, "val")


def test_corrupt_image_names_the_file(tree):
    dataset = Cityscapes(tree, "train")
    broken = dataset.samples[1][0]
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated download
    dataset[0]
    with pytest.raises(DatasetError, match=rf"cannot decode image {broken}"):
        dataset[1]


def test_out_of_range_label_names_file_and_value(tree):
    dataset = Cityscapes(tree, "train")
    path = dataset.samples[2][1]
    labels = np.asarray(Image.open(path)).copy()
    labels[0, :3] = 40
    Image.fromarray(labels).save(path)
    with pytest.raises(
        DatasetError, match=rf"{path}: label value\(s\) 40 are invalid here \(Cityscapes labelIds are 0..33\)"
    ):
        dataset[2]


def test_size_mismatch_names_the_file(tree):
    dataset = Cityscapes(tree, "val")
    path = dataset.samples[0][1]
    Image.open(path).resize((64, 32)).save(path)
    with pytest.raises(DatasetError, match=rf"{path}: mask size \(32, 64\) differs from image size \(64, 128\)"):
        dataset[0]


def test_colour_masks_are_refused(synthetic_folder, tmp_path):
    root = tmp_path / "f"
    shutil.copytree(synthetic_folder, root)
    path = sorted((root / "masks/train").glob("*.png"))[0]
    Image.open(path).convert("RGB").save(path)
    dataset = FolderDataset(root, "train", classes=WORLD_CLASSES)
    with pytest.raises(DatasetError, match="is a RGB image; masks must be single-channel 8-bit"):
        dataset[0]


def test_folder_class_list_is_checked(synthetic_folder):
    with pytest.raises(
        DatasetError,
        match=r"label value\(s\) [\d, ]+ are invalid here \(expected class ids 0..2 and ignore_value 255\)",
    ):
        FolderDataset(synthetic_folder, "train", classes=["road", "sidewalk", "building"])[0]
    with pytest.raises(ValueError, match="ignore_value 1 must be in 3..255"):
        FolderDataset(synthetic_folder, "train", classes=["a", "b", "c"], ignore_value=1)
