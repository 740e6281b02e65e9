"""Loaders read the real on-disk formats (written by the synthetic generator) with the right class ids."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from datasets import ADE20K, Cityscapes, DatasetError, FolderDataset, build_dataset
from datasets import cityscapes as cs
from datasets.synthetic import CLASSES as WORLD_CLASSES
from utils.config import load_config


def test_label_table_is_the_official_one():
    from cityscapesscripts.helpers.labels import labels

    ours = [(x.name, x.id, x.train_id, x.category, x.has_instances, x.ignore_in_eval, x.color) for x in cs.LABELS]
    official = [(x.name, x.id, x.trainId, x.category, x.hasInstances, x.ignoreInEval, x.color) for x in labels]
    assert ours == official
    assert cs.CLASSES == tuple(x.name for x in sorted(labels, key=lambda x: x.trainId) if 0 <= x.trainId < 255)


@pytest.mark.parametrize(
    "label_id, train_id", [(7, 0), (8, 1), (11, 2), (17, 5), (20, 7), (23, 10), (26, 13), (1, 255)]
)
def test_cityscapes_pixels_come_out_as_train_ids(synthetic_cityscapes, label_id, train_id):
    dataset = Cityscapes(synthetic_cityscapes, "train")
    assert dataset.label_type == "labelIds" and len(dataset) == 6
    found = False
    for i, (_, mask_path) in enumerate(dataset.samples):
        stored = np.asarray(Image.open(mask_path))
        if (stored == label_id).any():
            sample = dataset[i]
            assert (sample["mask"].numpy()[stored == label_id] == train_id).all()
            assert sample["image"].shape == (3, 64, 128) and sample["image"].dtype == torch.uint8
            found = True
    assert found, f"label id {label_id} should appear in the synthetic world"


def test_cityscapesscripts_converter_agrees_with_our_mapping(synthetic_cityscapes, tmp_path):
    """The official converter draws train ids from the polygons; our loader maps the labelIds PNG."""
    from cityscapesscripts.preparation.json2labelImg import json2labelImg

    dataset = Cityscapes(synthetic_cityscapes, "val")
    for i, (_, mask_path) in enumerate(dataset.samples):
        polygons = str(mask_path).replace("_labelIds.png", "_polygons.json")
        json2labelImg(polygons, str(tmp_path / "ids.png"), "ids")
        json2labelImg(polygons, str(tmp_path / "train.png"), "trainIds")
        assert np.array_equal(np.asarray(Image.open(tmp_path / "ids.png")), np.asarray(Image.open(mask_path)))
        assert np.array_equal(np.asarray(Image.open(tmp_path / "train.png")), dataset[i]["mask"].numpy())


def test_prepare_cityscapes_both_backends_and_idempotence(synthetic_cityscapes, tmp_path):
    root = tmp_path / "cs"
    shutil.copytree(synthetic_cityscapes, root)
    script = [sys.executable, str(ROOT / "scripts/prepare_cityscapes.py"), "--root", str(root), "--workers", "1"]
    subprocess.run(script + ["--backend", "ours"], check=True, capture_output=True)
    outputs = sorted(root.glob("gtFine/*/*/*_labelTrainIds.png"))
    assert len(outputs) == 9
    ours = {p: np.asarray(Image.open(p)).copy() for p in outputs}
    mtimes = {p: p.stat().st_mtime_ns for p in outputs}
    rerun = subprocess.run(script, check=True, capture_output=True, text=True).stdout
    assert "9 already converted, converting 0" in rerun and {p: p.stat().st_mtime_ns for p in outputs} == mtimes
    subprocess.run(script + ["--backend", "cityscapesscripts", "--overwrite"], check=True, capture_output=True)
    assert all(np.array_equal(np.asarray(Image.open(p)), ours[p]) for p in outputs)

    auto = Cityscapes(root, "train")
    assert auto.label_type == "labelTrainIds"
    by_ids = Cityscapes(root, "train", label_type="labelIds")
    assert all(torch.equal(auto.load_mask(i), by_ids.load_mask(i)) for i in range(len(auto)))


def test_cityscapes_test_split_is_images_only(synthetic_cityscapes):
    dataset = Cityscapes(synthetic_cityscapes, "test")
    assert len(dataset) == 2 and set(dataset[0]) == {"image", "name"}
    assert dataset[0]["name"].endswith("_000019") and "_leftImg8bit" not in dataset[0]["name"]


def test_cityscapes_train_extra_reads_coarse_labels(synthetic_cityscapes, tmp_path):
    root = tmp_path / "cs"
    shutil.copytree(synthetic_cityscapes, root)
    shutil.copytree(root / "leftImg8bit/train", root / "leftImg8bit/train_extra")
    for path in (root / "gtFine/train").glob("*/*_gtFine_labelIds.png"):
        target = root / "gtCoarse/train_extra" / path.parent.name / path.name.replace("gtFine", "gtCoarse")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    extra = Cityscapes(root, "train_extra")
    assert len(extra) == 6 and torch.equal(extra.load_mask(0), Cityscapes(root, "train").load_mask(0))


@pytest.mark.parametrize("root_level", ["parent", "ADEChallengeData2016"])
def test_ade20k_zero_is_ignored_and_ids_shift_by_one(synthetic_ade20k, root_level):
    root = synthetic_ade20k if root_level == "parent" else synthetic_ade20k / "ADEChallengeData2016"
    dataset = ADE20K(root, "train")
    assert len(dataset) == 4 and len(dataset.classes) == 150 and dataset.classes[2] == "sky"
    stored = np.asarray(Image.open(dataset.samples[0][1]))
    mask = dataset[0]["mask"].numpy()
    for value in np.unique(stored):
        assert (mask[stored == value] == (255 if value == 0 else value - 1)).all()
    assert 3 in stored  # sky (ADE value 3) is in every synthetic scene -> train id 2


def test_folder_dataset_and_palette_masks(synthetic_folder, tmp_path):
    dataset = FolderDataset(synthetic_folder, "train", classes=WORLD_CLASSES)
    assert len(dataset) == 4 and len(dataset.palette) == 11 and len(set(dataset.palette)) == 11
    stored = np.asarray(Image.open(dataset.samples[0][1]))
    assert np.array_equal(dataset[0]["mask"].numpy(), stored)
    # a palette ("P") PNG is read as its indices, not its colours
    root = tmp_path / "p"
    shutil.copytree(synthetic_folder, root)
    for path in (root / "masks/train").glob("*.png"):
        image = Image.fromarray(np.asarray(Image.open(path)), mode="P")
        image.putpalette([c for i in range(256) for c in (i, 255 - i, 3 * i % 256)])
        image.save(path)
    assert np.array_equal(FolderDataset(root, "train", classes=WORLD_CLASSES)[0]["mask"].numpy(), stored)


def test_build_dataset_from_config(synthetic_cityscapes):
    overrides = [f"data.root={synthetic_cityscapes}", "data.augment.crop_size=[32, 48]"]
    cfg = load_config(ROOT / "configs/cityscapes/spnet_r50.yaml", overrides)
    train = build_dataset(cfg, "train")
    sample = train[0]
    assert sample["image"].shape == (3, 32, 48) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (32, 48) and sample["mask"].dtype == torch.uint8
    val = build_dataset(cfg, "val")
    assert val[0]["image"].shape == (3, 64, 128)  # evaluation keeps the full image
    both = build_dataset(cfg, "train+val", train=False)
    assert len(both) == 9 and both.classes == cs.CLASSES
    wrong = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=150))
    with pytest.raises(DatasetError, match="has 19 classes but model.num_classes is 150; set model.num_classes=19"):
        build_dataset(wrong, "val")
    bad_arg = load_config(
        ROOT / "configs/cityscapes/spnet_r50.yaml", [*overrides, "data.dataset_args.label_typ=labelIds"]
    )
    with pytest.raises(ValueError, match="Cityscapes has no argument 'label_typ'; did you mean 'label_type'"):
        build_dataset(bad_arg, "val")
    switched = load_config(ROOT / "configs/cityscapes/spnet_r50.yaml", [*overrides, "data.dataset=ade20k"])
    with pytest.raises(ValueError) as err:  # the Cityscapes config's dataset_args, kept: the code's own not offered
        build_dataset(switched, "val")
    assert str(err.value) == (
        "data.dataset_args: ADE20K has no argument 'label_type'. Its arguments: ['allow_unpaired']; left from another "
        "dataset? With data.dataset=ade20k, set data.dataset_args={} or only those"
    )


def test_dataloader_collates_samples(synthetic_cityscapes):
    cfg = load_config(
        ROOT / "configs/cityscapes/spnet_r50.yaml",
        [f"data.root={synthetic_cityscapes}", "data.augment.crop_size=[32, 32]"],
    )
    loader = torch.utils.data.DataLoader(build_dataset(cfg, "train"), batch_size=3, num_workers=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["mask"].shape == (3, 32, 32) and len(batch["name"]) == 3


@pytest.mark.parametrize(
    "path, fixture",
    [
        ("cityscapes/spnet_r50.yaml", "synthetic_cityscapes"),
        ("cityscapes/spnet_r101.yaml", "synthetic_cityscapes"),
        ("demo.yaml", "synthetic_cityscapes"),
        ("ade20k/spnet_r50.yaml", "synthetic_ade20k"),
        ("ade20k/ablations/r50_mpm1.yaml", "synthetic_ade20k"),
        ("custom_folder.yaml", "synthetic_folder"),
    ],
)
def test_shipped_configs_read_their_dataset(path, fixture, request):
    cfg = load_config(ROOT / "configs" / path, [f"data.root={request.getfixturevalue(fixture)}"])
    train = build_dataset(cfg, cfg.data.train_split)
    sample = train[0]
    assert sample["image"].shape == (3, *cfg.data.augment.crop_size)
    assert set(torch.unique(sample["mask"]).tolist()) <= set(range(cfg.model.num_classes)) | {255}
    val = build_dataset(cfg, cfg.data.val_split)
    assert len(val) > 0 and val[0]["mask"].shape == val[0]["image"].shape[-2:]


def test_custom_folder_config_evaluates_images_at_their_own_size():
    """Its Cityscapes base evaluates at a long side of 2048: eval.py scaled the 256x512 synthetic
    folder images up 4x, unlike the validation during training (whole images as they are)."""
    cfg = load_config(ROOT / "configs/custom_folder.yaml")
    assert cfg.eval.base_size is None and tuple(cfg.eval.crop_size) == tuple(cfg.data.augment.crop_size)
    assert "image at its own size" in str(cfg.eval)
