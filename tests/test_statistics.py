"""datasets/statistics.py: class counts against a per-pixel count of the mask files, the class weights against
their published formulas, and the cache that counts again when the split changes."""

from __future__ import annotations

import json
import math
import shutil
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from datasets import FolderDataset
from datasets.statistics import METHODS, ClassStatistics, class_statistics, class_weights
from engine.data import read_masks
from utils.config import BALANCING, load_config
from utils.distributed import DistInfo

CLASSES = ["road", "car", "sky", "pole"]  # pole never appears


def _write(root, name, mask):
    (root / "images/train").mkdir(parents=True, exist_ok=True)
    (root / "masks/train").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*mask.shape, 3), np.uint8)).save(root / f"images/train/{name}.png")
    Image.fromarray(mask.astype(np.uint8)).save(root / f"masks/train/{name}.png")


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    masks = {
        "a": rng.choice([0, 1, 255], size=(5, 7), p=[0.5, 0.3, 0.2]),
        "b": rng.choice([0, 2], size=(6, 4)),
        "c": np.full((3, 3), 2),
    }
    for name, mask in masks.items():
        _write(tmp_path, name, mask)
    return tmp_path, masks


def _reference(masks):
    """Per-pixel Python counts: pixels, images and labelled pixels of the images holding each class."""
    pixels, images, present = [0] * 4, [0] * 4, [0] * 4
    ignored = 0
    for mask in masks.values():
        values = [int(v) for v in mask.flatten()]
        labelled = sum(1 for v in values if v != 255)
        ignored += sum(1 for v in values if v == 255)
        for c in range(4):
            n = sum(1 for v in values if v == c)
            pixels[c] += n
            images[c] += n > 0
            present[c] += labelled if n else 0
    return pixels, images, present, ignored


def test_counts_equal_a_per_pixel_count(folder):
    root, masks = folder
    stats = class_statistics(FolderDataset(root, "train", classes=CLASSES), progress=False)
    pixels, images, present, ignored = _reference(masks)
    assert (stats.pixels, stats.images, stats.present_pixels) == (pixels, images, present)
    assert stats.ignored_pixels == ignored
    assert stats.num_images == 3
    assert stats.pixel_frequency() == pytest.approx([p / sum(pixels) for p in pixels])
    assert stats.image_frequency() == pytest.approx([n / 3 for n in images])
    assert ClassStatistics.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
    assert "pole" in str(stats) and "0.000" in str(stats)


def test_class_weights_follow_their_formulas(folder):
    root, masks = folder
    stats = class_statistics(FolderDataset(root, "train", classes=CLASSES), progress=False)
    pixels, _, present, _ = _reference(masks)
    freq = [p / t for p, t in zip(pixels[:3], present[:3])]  # Eigen & Fergus: within the images holding c
    median = sorted(freq)[1]
    assert class_weights(stats, "median_frequency") == pytest.approx([median / f for f in freq] + [0.0])
    share = [p / sum(pixels) for p in pixels[:3]]
    assert class_weights(stats, "inverse_sqrt") == pytest.approx([1 / math.sqrt(p) for p in share] + [0.0])
    assert class_weights(stats, "enet_log") == pytest.approx([1 / math.log(1.02 + p) for p in share] + [0.0])
    assert METHODS == BALANCING  # the config's choices are the methods


def test_kept_counts_are_read_for_the_same_split_and_counted_again_when_it_changes(folder, tmp_path_factory):
    """engine.data.read_masks as a resumed run calls it: the counts kept in the run folder, unless the split changed."""
    root, masks = folder
    cache = tmp_path_factory.mktemp("run") / "class_statistics.json"
    cfg = load_config(ROOT / "configs/demo.yaml", ["data.check_masks=false", "loss.class_weight={auto: enet_log}"])

    def read(classes=CLASSES):
        counts, read = read_masks(
            cfg, DistInfo(), SimpleNamespace(train_set=FolderDataset(root, "train", classes=classes)), cache
        )
        return counts["train"], read == ["train"]

    stats, counted = read()
    assert counted and stats == class_statistics(FolderDataset(root, "train", classes=CLASSES), progress=False)
    planted = {**stats.to_dict(), "pixels": [1, 1, 1, 1]}  # kept counts of this split are read, not counted again
    cache.write_text(json.dumps({"train": planted}))
    again, counted = read()
    assert not counted and again.pixels == [1, 1, 1, 1]
    shutil.copy(root / "masks/train/c.png", root / "masks/train/d.png")  # one more image: another split
    shutil.copy(root / "images/train/c.png", root / "images/train/d.png")
    changed, counted = read()
    assert counted and changed.num_images == 4 and changed.pixels[2] == stats.pixels[2] + 9
    renamed, counted = read(["a", "b", "c", "d"])
    assert counted  # other class names: another key
    cache.write_text(json.dumps(planted))  # the one-split file of earlier versions: counted again, not an error
    assert read()[1]


def test_check_dataset_stats_prints_and_writes_the_counts(folder, tmp_path_factory, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    import check_dataset

    root, masks = folder
    (root / "images/val").mkdir()
    (root / "masks/val").mkdir()
    out = tmp_path_factory.mktemp("stats") / "train.json"
    argv = ["--dataset", "folder", "--root", str(root), "--arg", f"classes={CLASSES}", "--stats"]
    check_dataset.main([*argv, str(out)])
    written = json.loads(out.read_text())
    pixels, images, _, _ = _reference(masks)
    assert (written["pixels"], written["images"], written["split"]) == (pixels, images, "train")
    assert written["image_frequency"] == pytest.approx([n / 3 for n in images])
    assert "class statistics of train" in capsys.readouterr().out
    check_dataset.main(argv)  # no PATH: beside the data
    assert json.loads((root / "class_statistics_train.json").read_text())["pixels"] == pixels


@pytest.mark.slow
def test_train_weights_classes_from_the_cached_statistics(synthetic_cityscapes, tmp_path):
    """loss.class_weight {auto: ...}: counted once, logged, written to the run folder, read again on resume."""
    import re

    import train
    from datasets import build_dataset
    from test_train import TINY, _run
    from utils.config import load_config

    work_dir = tmp_path / "run"
    loss = ["loss.class_weight={auto: enet_log}", "loss.terms=[{name: ce}, {name: lovasz, weight: 0.5}]"]
    common = ["train.eval_interval=0", "train.checkpoint_interval=2", *loss]
    assert _run(synthetic_cityscapes, work_dir, "train.max_iters=2", *common) == 0
    cfg = load_config(ROOT / "configs/demo.yaml", [f"data.root={synthetic_cityscapes}"])
    expected = class_weights(class_statistics(build_dataset(cfg, "train"), progress=False), "enet_log")
    log = (work_dir / "train.log").read_text()
    logged = re.search(r"loss.class_weight enet_log, from the pixel frequencies of train \(counted\): (.*)", log)
    assert logged.group(1).startswith(f"road {expected[0]:.3g}, sidewalk {expected[1]:.3g}")
    cached = json.loads((work_dir / "class_statistics.json").read_text())
    assert sorted(cached) == ["train", "val"]  # data.check_masks read both splits before writing; kept by name
    assert class_weights(ClassStatistics.from_dict(cached["train"]), "enet_log") == pytest.approx(expected)
    assert train.main(
        ["--config", str(ROOT / "configs/demo.yaml"), "--resume", "auto", "--allow-config-change",
         f"data.root={synthetic_cityscapes}", f"train.work_dir={work_dir}", *TINY, "train.max_iters=3", *common]
    ) == 0  # fmt: skip
    log = (work_dir / "train.log").read_text()
    assert f"(from {work_dir / 'class_statistics.json'})" in log and "iter 3/3 loss" in log
    assert "masks of val fit the label convention (counted before, class_statistics.json)" in log
