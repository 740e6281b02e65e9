"""Folder dataset label conventions: exact train ids against reference mappings written here, their
errors, and the dataset doctor's detection of the convention the files are really in."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import ROOT
from datasets import DatasetError, FolderDataset, build_dataset, class_info
from datasets.doctor import check_dataset
from datasets.synthetic import CLASSES as WORLD_CLASSES
from datasets.synthetic import make_scene
from utils.cli import run
from utils.config import load_config

sys.path.insert(0, str(ROOT / "scripts"))
import check_dataset as check_dataset_script  # noqa: E402

COLORS = [
    (128, 64, 128),
    (128, 128, 64),
    (64, 128, 128),
]  # share channel values: only the packed triple tells them apart
COLOR_CLASSES = [{"name": n, "color": list(c)} for n, c in zip(["road", "grass", "sky"], COLORS, strict=True)]


def write_folder(root: Path, masks: dict[str, list[np.ndarray]]) -> Path:
    """images/<split>/m<i>.png (black) and masks/<split>/m<i>.png holding ``masks`` as given."""
    for split, arrays in masks.items():
        for i, mask in enumerate(arrays):
            for folder in ("images", "masks"):
                (root / folder / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((*mask.shape[:2], 3), np.uint8)).save(root / "images" / split / f"m{i}.png")
            Image.fromarray(mask).save(root / "masks" / split / f"m{i}.png")
    return root


def reference(mask: np.ndarray, table: dict) -> np.ndarray:
    """Train ids pixel by pixel through ``table`` (values or colour tuples), missing -> 255."""
    if mask.ndim == 3:
        return np.array([[table.get(tuple(int(c) for c in px), 255) for px in row] for row in mask], np.uint8)
    return np.array([[table.get(int(v), 255) for v in row] for row in mask], np.uint8)


def ids(dataset: FolderDataset, index: int = 0) -> np.ndarray:
    return dataset[index]["mask"].numpy()


def random_masks(values: list, count: int, seed: int, shape=(12, 16)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    picks = [rng.integers(0, len(values), shape) for _ in range(count)]
    return [np.array(values, np.uint8)[p] for p in picks]


def test_class_ids_and_reduce_zero_label(tmp_path):
    masks = random_masks([0, 1, 2, 3, 255], 2, seed=0)
    root = write_folder(tmp_path, {"train": masks})
    plain = FolderDataset(root, "train", classes=["a", "b", "c", "d"])
    assert np.array_equal(ids(plain, 1), reference(masks[1], {0: 0, 1: 1, 2: 2, 3: 3}))
    reduced = FolderDataset(root, "train", classes=["b", "c", "d"], reduce_zero_label=True)
    for i in range(2):
        assert np.array_equal(ids(reduced, i), reference(masks[i], {1: 0, 2: 1, 3: 2}))  # 0 and 255 ignored
    with pytest.raises(DatasetError, match=r"m0.png: label value\(s\) 3 are invalid here \(reduce_zero_label"):
        FolderDataset(root, "train", classes=["b", "c"], reduce_zero_label=True)[0]


def test_label_map_with_unlisted_values_as_errors_or_ignored(tmp_path):
    masks = random_masks([0, 7, 26, 33, 99], 1, seed=1)
    root = write_folder(tmp_path, {"train": masks})
    label_map = {7: 0, 26: 1, 33: 2, 0: 255}
    with pytest.raises(
        DatasetError, match=r"m0.png: label value\(s\) 99 are invalid here \(label_map lists \{0: 255, 7"
    ):
        FolderDataset(root, "train", classes=["a", "b", "c"], label_map=label_map)[0]
    dataset = FolderDataset(root, "train", classes=["a", "b", "c"], label_map=label_map, unlisted="ignore")
    assert np.array_equal(ids(dataset), reference(masks[0], {7: 0, 26: 1, 33: 2}))


def test_rgb_masks_map_each_colour_to_its_class(tmp_path):
    masks = random_masks([*COLORS, (0, 0, 0)], 2, seed=2)
    root = write_folder(tmp_path, {"train": masks})
    dataset = FolderDataset(root, "train", classes=COLOR_CLASSES, mask_format="rgb", ignore_colors=[[0, 0, 0]])
    table = {c: i for i, c in enumerate(COLORS)}
    for i in range(2):
        assert np.array_equal(ids(dataset, i), reference(masks[i], table))
    assert dataset.classes == ("road", "grass", "sky") and dataset.palette == tuple(COLORS)
    # a palette PNG is read by its colours, not its indices
    palette_mask = Image.fromarray(masks[0]).quantize(palette=_palette_image([*COLORS, (0, 0, 0)]), dither=0)
    palette_mask.save(root / "masks/train/m0.png")
    assert np.array_equal(ids(dataset, 0), reference(masks[0], table))


def test_colours_that_differ_in_channel_order_only_are_told_apart(tmp_path):
    colors = [(255, 0, 1), (1, 0, 255), (0, 255, 1), (0, 1, 255)]  # a byte-order or packing slip would mix them
    masks = random_masks(colors, 1, seed=4)
    root = write_folder(tmp_path, {"train": masks})
    classes = [{"name": f"c{i}", "color": list(c)} for i, c in enumerate(colors)]
    dataset = FolderDataset(root, "train", classes=classes, mask_format="rgb")
    assert np.array_equal(ids(dataset), reference(masks[0], {c: i for i, c in enumerate(colors)}))


def _palette_image(colors: list[tuple[int, int, int]]) -> Image.Image:
    image = Image.new("P", (1, 1))
    image.putpalette([c for color in colors for c in color] + [0] * (768 - 3 * len(colors)))
    return image


def test_a_colour_missing_from_the_palette_names_the_file_the_colour_and_its_pixels(tmp_path):
    mask = np.array([[COLORS[0]] * 4] * 3, np.uint8)
    mask[0, :3] = (1, 2, 3)  # 3 pixels
    mask[2, 0] = (0, 0, 0)  # 1 pixel, ignored once listed
    root = write_folder(tmp_path, {"train": [mask]})
    dataset = FolderDataset(root, "train", classes=COLOR_CLASSES, mask_format="rgb")
    with pytest.raises(DatasetError) as err:
        dataset[0]
    message = str(err.value)
    assert message.startswith(f"{root / 'masks/train/m0.png'}: mask color(s) not in the class colors: ")
    assert "[1, 2, 3] in 3 pixels, [0, 0, 0] in 1 pixels" in message and "ignore_colors" in message
    dataset = FolderDataset(root, "train", classes=COLOR_CLASSES, mask_format="rgb", ignore_colors=[[0, 0, 0]])
    with pytest.raises(DatasetError, match=r"\[1, 2, 3\] in 3 pixels\. Give the class its color"):
        dataset[0]


def test_classes_file_with_colours_is_read_relative_to_the_root(tmp_path):
    root = write_folder(tmp_path / "data", {"train": random_masks(COLORS, 1, seed=3)})
    (root / "classes.yaml").write_text(yaml.safe_dump(COLOR_CLASSES))
    dataset = FolderDataset(root, "train", classes="classes.yaml", mask_format="rgb")
    assert dataset.classes == ("road", "grass", "sky") and dataset.palette == tuple(COLORS)
    overrides = [f"data.root={root}", "data.dataset_args={classes: classes.yaml, mask_format: rgb}"]
    cfg = load_config(ROOT / "configs/custom_folder.yaml", [*overrides, "model.num_classes=3"])
    assert class_info(cfg) == (dataset.classes, dataset.palette)
    assert np.array_equal(np.unique(build_dataset(cfg, "train", train=False)[0]["mask"].numpy()), [0, 1, 2])
    # the training transforms see train ids: after scale, rotation and padding only 0..2 and 255
    assert set(np.unique(build_dataset(cfg, "train", train=True)[0]["mask"].numpy())) <= {0, 1, 2, 255}
    cfg = load_config(ROOT / "configs/custom_folder.yaml", overrides)  # its model.num_classes is 11
    with pytest.raises(DatasetError, match=r"has 3 classes but model.num_classes is 11; set model.num_classes=3"):
        build_dataset(cfg, "train")


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--arg", "classes=[{name: a, color: [1, 2, 3]}, {name: b, color: [1, 2, 3]}]"],
            "error: --arg: FolderDataset: classes: color [1, 2, 3] is given to both 'a' and 'b'; a mask pixel of that",
        ),
        (
            ["--arg", "classes=[a, b]", "--arg", "mask_format=rgb"],
            "error: --arg: FolderDataset: mask_format: rgb needs the color of every class: classes: [{name: road",
        ),
        (
            ["--arg", "classes=[{name: a, color: [1, 2, 3]}, b]"],
            "error: --arg: FolderDataset: classes: 1 of 2 classes have a color; give every class one, or none",
        ),
        (
            [
                "--arg",
                "classes=[{name: a, color: [0, 0, 0]}]",
                "--arg",
                "mask_format=rgb",
                "--arg",
                "ignore_colors=[[0, 0, 0]]",
            ],
            "error: --arg: FolderDataset: ignore_colors [0, 0, 0] is also a class's color",
        ),
        (
            ["--arg", "classes=[a]", "--arg", "reduce_zero_label=true", "--arg", "label_map={1: 0}"],
            "error: --arg: FolderDataset: label_map and reduce_zero_label both map mask values",
        ),
        (
            ["--arg", "classes=[a]", "--arg", "label_map={1: 3}"],
            "error: --arg: FolderDataset: label_map[1] = 3 must be",
        ),
        (
            ["--arg", "classes=[a]", "--arg", "unlisted=drop"],
            "error: --arg: FolderDataset: unlisted must be 'error' or",
        ),
    ],
)
def test_bad_convention_arguments_are_one_error_line(tmp_path, capsys, args, message):
    root = write_folder(tmp_path, {"train": random_masks([0], 1, seed=0), "val": random_masks([0], 1, seed=0)})
    assert run(check_dataset_script.main, ["--dataset", "folder", "--root", str(root), *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(message) and len(captured.err.splitlines()) == 1 and captured.out == ""


# --- the doctor ---------------------------------------------------------------------------------------


def framed(values: list[int], seed: int, count: int = 3) -> list[np.ndarray]:
    """Masks whose 2-pixel border is 0 (unlabelled surroundings) around random ``values``."""
    masks = random_masks(values, count, seed, shape=(16, 20))
    for mask in masks:
        mask[:2], mask[-2:], mask[:, :2], mask[:, -2:] = 0, 0, 0, 0
    return masks


def doctor(root: Path, capsys, *args: str) -> tuple[int, str]:
    code = check_dataset_script.main(["--dataset", "folder", "--root", str(root), *args])
    return code, capsys.readouterr().out


def test_doctor_detects_rgb_masks_and_passes_them_configured(tmp_path, capsys):
    root = write_folder(tmp_path, {s: random_masks(COLORS, 2, seed=i) for i, s in enumerate(["train", "val"])})
    code, out = doctor(root, capsys, "--arg", "classes=[road, grass, sky]")
    assert code == 1 and "mask convention: RGB colour masks (2 of 2 checked, 3 colours)" in out
    assert "PROBLEM: train: the masks are RGB colour images (3 colours: [" in out
    assert "set --arg mask_format=rgb and give every class its color" in out
    classes = yaml.safe_dump(COLOR_CLASSES, default_flow_style=True).strip()
    code, out = doctor(root, capsys, "--arg", f"classes={classes}", "--arg", "mask_format=rgb")
    assert code == 0 and "OK: the dataset reads as expected" in out and "PROBLEM" not in out


def test_doctor_detects_reduce_zero_label_and_passes_it_configured(tmp_path, capsys):
    root = write_folder(tmp_path, {"train": framed([1, 2, 3], 0), "val": framed([1, 2, 3], 1)})
    code, out = doctor(root, capsys, "--arg", "classes=[a, b, c]")
    assert code == 1 and "mask convention: 0 = unlabelled, classes 1..3 (reduce_zero_label)" in out
    assert "0 in every checked mask (100% of the border pixels)" in out and "set --arg reduce_zero_label=true" in out
    code, out = doctor(root, capsys, "--arg", "classes=[a, b, c]", "--arg", "reduce_zero_label=true")
    assert code == 0 and "mask convention: reduce_zero_label, as configured" in out and "WARNING" not in out
    # every value a class and 0 on the border: a warning, the data may well mean class 0
    code, out = doctor(root, capsys, "--arg", "classes=[void, a, b, c]")
    assert code == 0 and "WARNING: train: 0 (void) is in every checked mask and on 100% of the border pixels" in out


def test_doctor_reports_reduce_zero_label_on_masks_without_zero(tmp_path, capsys):
    root = write_folder(tmp_path, {s: random_masks([1, 2], 2, seed=i) for i, s in enumerate(["train", "val"])})
    code, out = doctor(root, capsys, "--arg", "classes=[a, b]", "--arg", "reduce_zero_label=true")
    assert code == 1
    assert "PROBLEM: train: reduce_zero_label is set but none of the 2 checked masks holds 0" in out
    assert "remove --arg reduce_zero_label=true" in out


def test_doctor_suggests_a_label_map_for_values_above_the_class_count(tmp_path, capsys):
    masks = {s: random_masks([7, 26, 33, 255], 2, seed=i) for i, s in enumerate(["train", "val"])}
    root = write_folder(tmp_path, masks)
    code, out = doctor(root, capsys, "--arg", "classes=[a, b, c]")
    assert code == 1 and "mask convention: ids outside the class list (label_map)" in out
    assert "mask values 7, 26, 33 are above the 3 class ids" in out and "e.g. {7: 0, 26: 1, 33: 2}" in out
    code, out = doctor(root, capsys, "--arg", "classes=[a, b, c]", "--arg", "label_map={7: 0, 26: 1, 33: 2}")
    assert code == 0 and "class pixels: " in out
    dataset = FolderDataset(root, "train", classes=["a", "b", "c"], label_map={7: 0, 26: 1, 33: 2})
    for i, mask in enumerate(masks["train"]):
        assert np.array_equal(ids(dataset, i), reference(mask, {7: 0, 26: 1, 33: 2}))


def test_the_synthetic_folder_rgb_export_trains_as_printed(tmp_path, capsys):
    """make_synthetic.py --format folder-rgb: 6 classes in colour masks, read back with the command it prints."""
    import make_synthetic

    root = tmp_path / "rgb"
    make_synthetic.main(
        ["--format", "folder-rgb", "--out", str(root), "--train", "2", "--val", "1", "--size", "32", "48"]
    )
    command = capsys.readouterr().out.splitlines()[-1]
    assert command.startswith("train on it: python train.py --config configs/custom_folder.yaml ")
    overrides = shlex.split(command.split("custom_folder.yaml ")[1])
    cfg = load_config(ROOT / "configs/custom_folder.yaml", overrides)
    dataset = build_dataset(cfg, "train", train=False)
    assert dataset.classes == ("background", "road", "sidewalk", "car", "vegetation", "thin structure")
    reference_ids = {"road": 1, "sidewalk": 2, "car": 3, "vegetation": 4, "pole": 5, "traffic sign": 5}
    for i in range(2):
        world = make_scene([0, 0, i], 32, 48)
        expected = world.labels({name: reference_ids.get(name, 0) for name in (*WORLD_CLASSES, "ego vehicle")})
        assert np.array_equal(dataset[i]["mask"].numpy(), expected)
    assert check_dataset("folder", root, dataset_args=cfg.data.dataset_args).ok
