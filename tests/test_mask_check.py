"""train.py reads every mask before it writes anything (``data.check_masks``): a mask that does not fit the label
convention is one ``error:`` line naming the file and the fix, and the run folder is never created. The pass is
split over processes and loader workers without changing its counts or drawing from the global RNG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import ROOT
from datasets import DatasetError, FolderDataset
from datasets.statistics import ClassStatistics, class_statistics, count_masks, split_key
from engine.data import plan_data, read_masks
from test_label_conventions import COLOR_CLASSES, COLORS, random_masks, write_folder
from test_train import TINY
from train import main as train_main
from utils.cli import run
from utils.config import load_config
from utils.distributed import DistInfo

STRAY = (9, 9, 9)
SMALL = [*TINY, "train.batch_size=2", "train.max_iters=1", "train.eval_interval=0"]  # a few masks per split


def rgb_masks(count: int, seed: int) -> list[np.ndarray]:
    return random_masks([list(c) for c in COLORS], count, seed)


def with_stray_colour(mask: np.ndarray, pixels: int = 5) -> np.ndarray:
    mask = mask.copy()
    mask.reshape(-1, 3)[:pixels] = STRAY
    return mask


def config_file(tmp_path: Path, root: Path, dataset_args: dict) -> Path:
    """A tiny SPNet on the folder dataset at ``root`` (the demo's model, 3 classes)."""
    path = tmp_path / "folder.yaml"
    data = {"dataset": "folder", "root": str(root), "dataset_args": dataset_args}
    path.write_text(
        yaml.safe_dump({"_base_": str(ROOT / "configs/demo.yaml"), "data": data, "model": {"num_classes": 3}})
    )
    return path


def train(config: Path, work_dir: Path, *extra: str) -> int:
    return run(train_main, ["--config", str(config), f"train.work_dir={work_dir}", *SMALL, *extra])


RGB = {"classes": COLOR_CLASSES, "mask_format": "rgb"}


@pytest.mark.parametrize(
    ("masks", "dataset_args", "message"),
    [
        pytest.param(
            lambda: {"train": rgb_masks(3, 0), "val": [*rgb_masks(1, 1), with_stray_colour(rgb_masks(1, 2)[0])]},
            RGB,
            "{root}/masks/val/m1.png: mask color(s) not in the class colors: [9, 9, 9] in 5 pixels. Give the class "
            "its color in data.dataset_args.classes, or list the color in data.dataset_args.ignore_colors",
            id="a colour missing from the palette, in the last validation mask",
        ),
        pytest.param(
            lambda: {
                "train": [*random_masks([0, 1, 2], 2, 0), random_masks([0, 7], 1, 1)[0]],
                "val": random_masks([1], 1, 2),
            },
            {"classes": ["a", "b", "c"]},
            "{root}/masks/train/m2.png: label value(s) 7 are invalid here "
            "(expected class ids 0..2 and ignore_value 255)",
            id="a value outside the classes, in the last training mask",
        ),
        pytest.param(
            lambda: {"train": random_masks([1, 2, 3], 3, 0), "val": random_masks([1, 3], 2, 1)},
            {"classes": ["a", "b", "c"], "reduce_zero_label": True},
            "data.dataset_args.reduce_zero_label is true, but none of the 5 masks of train and val holds 0, the value "
            "it ignores: the masks look 0-based already, and every class would be read as the one before it; remove "
            "data.dataset_args.reduce_zero_label (or set data.check_masks=false if 0 is truly absent)",
            id="reduce_zero_label on masks without 0",
        ),
    ],
)
def test_a_mask_that_does_not_fit_stops_training_before_anything_is_written(
    tmp_path, capsys, masks, dataset_args, message
):
    root = write_folder(tmp_path / "data", masks())
    work_dir = tmp_path / "run"
    assert train(config_file(tmp_path, root, dataset_args), work_dir) == 2
    err = capsys.readouterr().err.splitlines()  # the log's first lines, then the error
    assert err[-1] == f"error: {message.format(root=root)}" and sum(line.startswith("error") for line in err) == 1
    assert not work_dir.exists()


def test_the_check_is_what_keeps_the_run_folder_unwritten(tmp_path, capsys):
    """data.check_masks=false: the same stray colour is found only when the sample is read, inside the run."""
    root = write_folder(
        tmp_path / "data", {"train": [with_stray_colour(m) for m in rgb_masks(4, 0)], "val": rgb_masks(1, 1)}
    )
    work_dir = tmp_path / "run"
    assert train(config_file(tmp_path, root, RGB), work_dir, "data.check_masks=false") == 2
    assert "mask color(s) not in the class colors: [9, 9, 9]" in capsys.readouterr().err
    assert (work_dir / "train.log").is_file()


def test_reduce_zero_label_passes_when_one_mask_of_either_split_holds_0(tmp_path):
    root = write_folder(
        tmp_path / "data", {"train": random_masks([1, 2, 3], 2, 0), "val": random_masks([0, 1, 3], 1, 1)}
    )
    cfg = load_config(config_file(tmp_path, root, {"classes": ["a", "b", "c"], "reduce_zero_label": True}), SMALL)
    counts, read = read_masks(cfg, DistInfo(), plan_data(cfg, DistInfo()), tmp_path / "none.json")
    assert read == ["train", "val"] and (counts["train"].zero_masks, counts["val"].zero_masks) == (0, 1)
    assert counts["val"].ignored_pixels == int((np.array(Image.open(root / "masks/val/m0.png")) == 0).sum())


def test_shards_and_workers_count_what_one_pass_counts_and_agree_on_the_first_error(tmp_path):
    masks = rgb_masks(7, 0)
    root = write_folder(tmp_path, {"train": masks})
    dataset = FolderDataset(root, "train", **RGB)
    whole = class_statistics(dataset, progress=False)
    expected = [sum(int((np.all(m == c, axis=-1)).sum()) for m in masks) for c in COLORS]
    assert whole.pixels == expected and whole.num_images == 7
    for processes in (2, 3):
        shards = [count_masks(dataset, shard=(r, processes), progress=False) for r in range(processes)]
        assert all(error is None for _, error in shards)
        assert ClassStatistics.combined([stats for stats, _ in shards]) == whole
    assert class_statistics(dataset, progress=False, workers=2) == whole
    for i in (
        2,
        4,
    ):  # stray colours in masks 2 and 4: of 3 shards (0 3 6 / 1 4 / 2 5), shard 1 meets 4, shard 2 meets 2
        Image.fromarray(with_stray_colour(masks[i])).save(root / f"masks/train/m{i}.png")
    errors = [count_masks(dataset, shard=(r, 3), progress=False)[1] for r in range(3)]
    assert [error and error[0] for error in errors] == [None, 4, 2]
    first = min(e for e in errors if e is not None)
    assert first[0] == 2 and first[1].startswith(f"{root}/masks/train/m2.png: mask color(s) not in the class colors")
    with pytest.raises(DatasetError, match="m2.png: mask color"):
        class_statistics(dataset, progress=False, workers=2)


def test_reading_the_masks_draws_nothing_from_the_global_rng(tmp_path):
    root = write_folder(tmp_path / "data", {"train": rgb_masks(4, 0), "val": rgb_masks(2, 1)})
    cfg = load_config(config_file(tmp_path, root, RGB), [*SMALL, "train.num_workers=1"])
    data = plan_data(cfg, DistInfo())
    torch.manual_seed(123)
    before = torch.get_rng_state()
    counts, read = read_masks(cfg, DistInfo(), data, tmp_path / "none.json")
    assert read == ["train", "val"] and torch.equal(torch.get_rng_state(), before)


def test_the_kept_counts_are_of_the_split_as_configured(tmp_path):
    """A class colour changed under the same names reads the masks again: the colours are part of the key."""
    root = write_folder(tmp_path, {"train": rgb_masks(2, 0)})
    dataset = FolderDataset(root, "train", **RGB)
    recoloured = [{**c, "color": [0, 0, 1]} if c["name"] == "sky" else c for c in COLOR_CLASSES]
    assert split_key(FolderDataset(root, "train", **RGB)) == split_key(dataset)
    assert split_key(FolderDataset(root, "train", classes=recoloured, mask_format="rgb")) != split_key(dataset)
    ignoring = FolderDataset(root, "train", **RGB, ignore_colors=[[0, 0, 1]])
    assert split_key(ignoring) != split_key(dataset)


@pytest.mark.slow
def test_two_processes_agree_on_the_error_one_of_them_met(tmp_path):
    """torchrun, 2 gloo processes: the stray colour of validation mask 1 is read by rank 1 only; both stop on it."""
    masks = {"train": rgb_masks(4, 0), "val": [*rgb_masks(1, 1), with_stray_colour(rgb_masks(1, 2)[0])]}
    root = write_folder(tmp_path / "data", masks)
    work_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(ROOT / "train.py"),
        "--config", str(config_file(tmp_path, root, RGB)), f"train.work_dir={work_dir}", *SMALL,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert errors == [  # printed once, by rank 0
        f"error: {root}/masks/val/m1.png: mask color(s) not in the class colors: [9, 9, 9] in 5 pixels. Give the "
        "class its color in data.dataset_args.classes, or list the color in data.dataset_args.ignore_colors"
    ], result.stderr[-3000:]
    assert not work_dir.exists()
