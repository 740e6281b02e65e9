"""The dataset doctor finds what would make training silently wrong, and passes a healthy tree."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, png_header
from datasets.cityscapes import LABEL_ID_TO_TRAIN_ID
from datasets.doctor import check_dataset
from datasets.synthetic import CLASSES as WORLD_CLASSES
from utils.cli import run

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


def test_truncated_image_is_decoded_and_named(synthetic_cityscapes, tmp_path, capsys):
    root = tmp_path / "cs"
    shutil.copytree(synthetic_cityscapes, root)
    broken = sorted(root.glob("leftImg8bit/val/*/*.png"))[1]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])  # valid header, half the pixels
    assert check_dataset_script.main(["--dataset", "cityscapes", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "  decoded 3 of 3 images and their masks" in out
    assert f"PROBLEM: val: 1 of 6 files cannot be read for training:\n  cannot decode image {broken}" in out
    assert "PROBLEM: train" not in out


def test_an_image_over_the_pixel_limit_is_a_problem_naming_it_and_the_flag(synthetic_cityscapes, tmp_path, capsys):
    """Was: Pillow's DecompressionBombError, a traceback without the file name."""
    root = tmp_path / "cs"
    shutil.copytree(synthetic_cityscapes, root)
    huge = sorted(root.glob("leftImg8bit/val/*/*.png"))[1]
    png_header(huge, 20000, 9000)
    assert check_dataset_script.main(["--dataset", "cityscapes", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert (
        f"PROBLEM: val: 1 of 6 files cannot be read for training:\n  image {huge} is 20000x9000 = 180,000,000 pixels, "
        f"over the limit of {2 * Image.MAX_IMAGE_PIXELS:,} (Pillow's guard against decompression bombs); if you trust "
        "the file, raise the limit: --max-pixels 180000000\n"
    ) in out
    assert "PROBLEM: train" not in out
    args = ["--dataset", "cityscapes", "--root", str(synthetic_cityscapes), "--max-pixels", "8000"]
    assert check_dataset_script.main(args) == 1
    assert (
        "over the limit of 8,000 (set by --max-pixels); if you trust the file, raise the limit: --max-pixels 8192"
        in (capsys.readouterr().out)
    )
    assert check_dataset_script.main([*args[:-1], "8192"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        check_dataset_script.parse_args([*args[:-1], "0"])
    assert exit_.value.code == 2 and capsys.readouterr().err == "error: --max-pixels must be at least 1 (see --help)\n"


def test_max_images_decodes_an_evenly_spaced_subset(synthetic_cityscapes, tmp_path):
    root = tmp_path / "cs"
    shutil.copytree(synthetic_cityscapes, root)
    images = sorted(root.glob("leftImg8bit/train/*/*.png"))
    images[1].write_bytes(images[1].read_bytes()[:200])  # of 6 samples, 2 evenly spaced are 0 and 3
    quick = check_dataset("cityscapes", root, max_images=2)
    assert "  decoded 2 of 6 images and their masks" in quick.lines  # train
    assert "  decoded 2 of 3 images and their masks" in quick.lines  # val
    assert "  image sizes (W x H): 128x64: 2" in quick.lines and quick.ok
    assert "  mask values in 6 masks: 1, 7-8, 11-13, 17, 20-23, 26" in quick.lines  # --max-masks still applies
    full = check_dataset("cityscapes", root)
    assert "  decoded 6 of 6 images and their masks" in full.lines
    [problem] = full.problems  # Pillow's own words in between vary with its version
    assert problem.startswith(f"train: 1 of 12 files cannot be read for training:\n  cannot decode image {images[1]}: ")
    assert problem.endswith(". Re-download or remove the file.")


def test_invalid_mask_values_name_the_files(synthetic_cityscapes, tmp_path):
    root = tmp_path / "cs"
    shutil.copytree(synthetic_cityscapes, root)
    masks = sorted(root.glob("gtFine/val/*/*_labelIds.png"))
    for path in (masks[0], masks[2]):
        labels = np.asarray(Image.open(path)).copy()
        labels[5, 5:8] = 200
        Image.fromarray(labels).save(path)
    report = check_dataset("cityscapes", root)
    first, last = (str(p.relative_to(root)) for p in (masks[0], masks[2]))
    assert report.problems == [
        f"val: mask values 200 are not valid (Cityscapes labelIds are 0..33): in 2 of 3 masks, e.g. {first}, {last}"
    ]


def test_missing_optional_split_is_one_warning_line(synthetic_cityscapes, tmp_path, capsys):
    root = tmp_path / "cs"
    shutil.copytree(synthetic_cityscapes, root)
    shutil.rmtree(root / "leftImg8bit/test")
    assert check_dataset_script.main(["--dataset", "cityscapes", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    warning = (
        f"WARNING: test: not found at {root / 'leftImg8bit/test'} (optional: only needed for test-set submissions)"
    )
    assert warning in out.splitlines()
    assert "Expected layout" not in out and [line for line in out.splitlines() if "test:" in line] == [warning]
    shutil.rmtree(root / "gtFine/val")  # a required split keeps the layout block, as a problem
    report = check_dataset("cityscapes", root)
    assert report.problems[0].startswith(f"val: folder not found: {root / 'gtFine/val'}\nExpected layout:\n")


def test_two_images_of_one_name_are_a_problem_not_ok(synthetic_folder, tmp_path, capsys):
    """street_00000.jpg and .png (different pictures) next to one mask: the doctor used to say OK."""
    root = tmp_path / "f"
    shutil.copytree(synthetic_folder, root)
    shutil.copy(root / "images/val/street_00001.jpg", root / "images/val/street_00000.png")
    classes = "classes=[" + ", ".join(WORLD_CLASSES) + "]"
    assert check_dataset_script.main(["--dataset", "folder", "--root", str(root), "--arg", classes]) == 1
    out = capsys.readouterr().out
    both = f"{root / 'images/val/street_00000.jpg'} and {root / 'images/val/street_00000.png'}"
    assert "PROBLEM: val: 1 name(s) under" in out and both in out and "OK:" not in out


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "error: --arg: FolderDataset: classes must list 1 to 255 class names"),
        (["--arg", "classes=3"], "error: --arg: FolderDataset: classes must list 1 to 255 class names"),
        (["--arg", "foo=1"], "error: --arg: FolderDataset has no argument 'foo'"),
        (["--arg", "classes=[a, b]", "--arg", "ignore_value=1"], "error: --arg: FolderDataset: ignore_value 1"),
    ],
)
def test_wrong_dataset_arguments_are_one_error_line(synthetic_folder, capsys, args, message):
    """Checked by the same ``construct`` as build_dataset in train.py: exit 2, no traceback, no report."""
    argv = ["--dataset", "folder", "--root", str(synthetic_folder), *args]
    assert run(check_dataset_script.main, argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(message) and len(captured.err.splitlines()) == 1 and captured.out == ""


@pytest.mark.parametrize(
    "arg, message",
    [("classes", "--arg 'classes' must look like KEY=VALUE"), ("classes=[a, b", "cannot parse '[a, b' as YAML")],
)
def test_unparsable_arg_is_a_usage_error(arg, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        check_dataset_script.parse_args(["--dataset", "folder", "--root", "x", "--arg", arg])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
