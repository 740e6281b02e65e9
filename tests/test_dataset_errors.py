"""Bad input: every failure names the file (or the expected layout) and the fix; nothing is silently skipped."""

from __future__ import annotations

import re
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import png_header
from datasets import ADE20K, Cityscapes, DatasetError, FolderDataset
from datasets.base import read_image, read_mask
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


# 16-bit values and what an 8-bit reader must make of them: round(v / 257), so v8 * 257 comes back as v8.
GREY16 = np.array([[0, 128, 129, 257, 1000, 257 * 77, 257 * 200, 65535]], np.uint16)
GREY8 = np.array([[0, 0, 1, 1, 4, 77, 200, 255]], np.uint8)


def test_16bit_grey_image_is_scaled_not_clipped(tree):
    path = tree / "grey16.png"
    Image.fromarray(GREY16).save(path)  # Pillow writes and reopens it as mode I;16
    assert np.array_equal(read_image(path).numpy(), np.repeat(GREY8[None], 3, axis=0))
    dataset = Cityscapes(tree, "train")
    image_path = dataset.samples[0][0]
    values = np.random.default_rng(0).integers(0, 65536, (64, 128)).astype(np.uint16)
    Image.fromarray(values).save(image_path)
    image = dataset[0]["image"]
    expected = np.floor(values / 257 + 0.5).astype(np.uint8)
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 128)
    assert all(np.array_equal(channel, expected) for channel in image.numpy())
    assert abs(image.float().mean().item() - 127.5) < 2  # clipping at 255 made it about 255


def test_32bit_integer_image_in_16bit_range_reads_like_16bit(tmp_path):
    path = tmp_path / "grey.tif"
    Image.fromarray(GREY16.astype(np.int32)).save(path)  # mode I, as some Pillow versions open 16-bit PNGs
    assert np.array_equal(read_image(path).numpy()[1], GREY8)
    Image.fromarray(np.array([[-5, 70000]], np.int32)).save(path)
    with pytest.raises(
        DatasetError, match=re.escape(f"image {path} is a 32-bit integer image (mode I) with values -5..70000")
    ):
        read_image(path)


def test_float_image_is_refused_by_name(tmp_path):
    path = tmp_path / "depth.tif"
    Image.fromarray(np.ones((4, 6), np.float32)).save(path)
    with pytest.raises(
        DatasetError, match=re.escape(f"image {path} is a 32-bit float image (mode F); convert it to 8-bit RGB")
    ):
        read_image(path)


def test_48bit_rgb_png_reads_its_high_byte(tmp_path):
    # Pillow cannot write 16-bit RGB, so write the PNG by hand: IHDR bit depth 16, colour type 2 (RGB).
    rgb = np.array([[[0, 257, 65535], [1000, 257 * 77, 65280]]], np.uint16)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)  # filter byte 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", rgb.shape[1], rgb.shape[0], 16, 2, 0, 0, 0)
    path = tmp_path / "rgb48.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )
    assert read_image(path).permute(1, 2, 0).tolist() == [[[0, 1, 255], [3, 77, 255]]]  # v >> 8: v8 * 257 -> v8


@pytest.mark.parametrize(
    "folder, name, other",
    [
        ("images/val", "street_00000.jpg", "street_00000.png"),  # two images for one mask
        ("images/val/sub", "a.jpg", "a.JPEG"),  # in a subfolder, suffixes in any case
        ("masks/val", "street_00000.png", "street_00000.PNG"),  # two masks for one image
    ],
)
def test_two_files_of_one_name_are_refused_not_paired_by_guess(synthetic_folder, tmp_path, folder, name, other):
    """Images pair with masks by path without suffix: a.jpg and a.png (different pictures) next to
    a.png in masks/ used to pair the mask with whichever came last."""
    root = tmp_path / "f"
    shutil.copytree(synthetic_folder, root)
    (root / folder).mkdir(parents=True, exist_ok=True)
    source = next((root / folder.split("/")[0] / "val").glob("street_00001.*"))
    for file in (name, other):
        shutil.copy(source, root / folder / file)
    if folder == "images/val/sub":
        (root / "masks/val/sub").mkdir()
        shutil.copy(sorted((root / "masks/val").glob("*.png"))[0], root / "masks/val/sub/a.png")
    with pytest.raises(DatasetError) as err:
        FolderDataset(root, "val", classes=WORLD_CLASSES)
    message = str(err.value)
    assert f"1 name(s) under {root / folder.split('/sub')[0]} have several files" in message
    assert " and ".join(sorted(str(root / folder / file) for file in (name, other))) in message
    assert "rename or remove all but one file of each name" in message
    assert len(FolderDataset(root, "train", classes=WORLD_CLASSES)) == 4  # the other split is untouched


def test_folder_masks_match_png_in_any_case(synthetic_folder, tmp_path):
    root = tmp_path / "f"
    shutil.copytree(synthetic_folder, root)
    mask = sorted((root / "masks/val").glob("*.png"))[0]
    mask.rename(mask.with_suffix(".PNG"))  # was left out, and its image reported without a mask
    dataset = FolderDataset(root, "val", classes=WORLD_CLASSES)
    assert mask.with_suffix(".PNG") in [m for _, m in dataset.samples] and len(dataset) == 2


@pytest.mark.parametrize("classes", [None, 3, "road", [], ["c"] * 256])
def test_folder_classes_must_be_a_list_of_names(synthetic_folder, classes):
    with pytest.raises(ValueError, match=r"classes must list 1 to 255 class names.*e\.g\. classes=\[background"):
        FolderDataset(synthetic_folder, "train", classes=classes)


def test_an_image_over_pillows_limit_is_one_line_naming_the_file_and_the_key(tmp_path):
    """Was: Pillow's DecompressionBombError, a traceback without the file name."""
    pillow = Image.MAX_IMAGE_PIXELS
    huge = tmp_path / "huge.png"
    png_header(huge, 20000, 10000)
    with pytest.raises(DatasetError) as err:
        read_image(huge)
    assert str(err.value) == (
        f"image {huge} is 20000x10000 = 200,000,000 pixels, over the limit of {2 * pillow:,} (Pillow's guard against "
        "decompression bombs); if you trust the file, raise the limit: data.max_image_pixels=200000000"
    )
    with pytest.raises(DatasetError, match=f"cannot decode image {huge}"):  # a raised limit opens it (no pixels here)
        read_image(huge, 200_000_000)
    assert Image.MAX_IMAGE_PIXELS == pillow  # Pillow's own check is back

    small = tmp_path / "small.png"
    Image.new("L", (64, 48)).save(small)
    with pytest.raises(DatasetError) as err:
        read_image(small, 3000, "--max-pixels")
    assert str(err.value) == (
        f"image {small} is 64x48 = 3,072 pixels, over the limit of 3,000 (set by --max-pixels); if you trust the "
        "file, raise the limit: --max-pixels 3072"
    )
    with pytest.raises(DatasetError, match=re.escape(f"mask {small} is 64x48 = 3,072 pixels, over the limit")):
        read_mask(small, 3000)
    assert read_image(small, 3072).shape == (3, 48, 64) and read_mask(small, 3072).shape == (48, 64)


def test_data_max_image_pixels_limits_the_datasets(tree):
    from conftest import ROOT
    from datasets import build_dataset
    from utils.config import load_config

    cfg = load_config(ROOT / "configs/demo.yaml", [f"data.root={tree}", "data.max_image_pixels=8000"])
    dataset = build_dataset(cfg, "train+val")
    with pytest.raises(DatasetError) as err:
        dataset[0]
    assert str(err.value).endswith(
        "is 128x64 = 8,192 pixels, over the limit of 8,000 (set by data.max_image_pixels); if you trust the file, "
        "raise the limit: data.max_image_pixels=8192"
    )
    cfg = load_config(ROOT / "configs/demo.yaml", [f"data.root={tree}", "data.max_image_pixels=8192"])
    assert build_dataset(cfg, "val")[0]["image"].shape[-2:] == (64, 128)
