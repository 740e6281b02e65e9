"""The dataset doctor finds what would make training silently wrong, and passes a healthy tree."""

from __future__ import annotations

import shutil
import sys

import numpy as np
from PIL import Image

from conftest import ROOT
from datasets.cityscapes import LABEL_ID_TO_TRAIN_ID
from datasets.doctor import check_dataset
from datasets.synthetic import CLASSES as WORLD_CLASSES

sys.path.insert(0, str(ROOT / "scripts"))
import check_dataset as check_dataset_script  # noqa: E402


def test_healthy_tree_passes_with_a_summary(synthetic_cityscapes, capsys):
    assert check_dataset_script.main(["--dataset", "cityscapes", "--root", str(synthetic_cityscapes)]) == 0
    out = capsys.readouterr().out
    assert "train: 6 images (official: 2975)" in out and "val: 3 images (official: 500)" in out
    assert "test: 2 images (official: 1525)" in out
    assert "image sizes (W x H): 128x64: 6" in out
    assert "class pixels: " in out and "sky" in out
    assert "WARNING: train: 6 images where the official split has 2975" in out
    assert out.strip().endswith("OK: the dataset reads as expected")


def test_train_ids_saved_as_label_ids_are_caught(synthetic_cityscapes, tmp_path, capsys):
    root = tmp_path / "cs"
    shutil.copytree(synthetic_cityscapes, root)
    lookup = np.full(256, 255, np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        lookup[label_id] = train_id
    for path in root.glob("gtFine/*/*/*_labelIds.png"):  # the classic mistake: trainIds under the labelIds name
        Image.fromarray(lookup[np.asarray(Image.open(path))]).save(path)
    assert check_dataset_script.main(["--dataset", "cityscapes", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM: train: files named *_labelIds.png hold train ids" in out


def test_shifted_ade20k_annotations_are_caught(synthetic_ade20k, tmp_path):
    root = tmp_path / "ade"
    shutil.copytree(synthetic_ade20k, root)
    for path in root.glob("ADEChallengeData2016/annotations/*/*.png"):
        values = np.asarray(Image.open(path))
        Image.fromarray((values.astype(np.int16) - 1).astype(np.uint8)).save(path)  # 0 -> 255, k -> k - 1
    report = check_dataset("ade20k", root)
    assert not report.ok and "annotations look already shifted to 0..149" in report.problems[0]
    healthy = check_dataset("ade20k", synthetic_ade20k)
    assert healthy.ok and "val: 3 images (official: 2000)" in healthy.lines


def test_missing_split_and_bad_masks_are_problems(synthetic_folder, tmp_path):
    classes = list(WORLD_CLASSES)
    root = tmp_path / "f"
    shutil.copytree(synthetic_folder, root)
    mask = sorted((root / "masks/train").glob("*.png"))[0]
    Image.open(mask).resize((10, 10)).save(mask)
    values = sorted((root / "masks/train").glob("*.png"))[1]
    array = np.asarray(Image.open(values)).copy()
    array[0, 0] = 77
    Image.fromarray(array).save(values)
    shutil.rmtree(root / "images/val")
    report = check_dataset("folder", root, dataset_args={"classes": classes})
    problems = "\n".join(report.problems)
    assert "1 masks differ in size from their image" in problems
    assert "mask values 77 are not valid" in problems
    assert "val: folder not found" in problems
