"""Common corruptions (datasets/corruptions.py), their robustness table (engine/robustness.py) and
eval.py --corruption / --corruptions end to end, against references computed here."""

from __future__ import annotations

import colorsys
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors

import eval as eval_script
from conftest import ROOT, tiny_config
from datasets import Cityscapes, Corruption, build_dataset
from datasets.corruptions import CORRUPTIONS, PARAMETERS, SEVERITIES, CorruptedDataset, corrupt, defocus_kernel
from datasets.synthetic import make_scene
from datasets.transforms import eval_transforms
from engine import robustness
from models import build_model
from utils.config import config_from_dict, config_to_dict, load_config

RANDOM = ("gaussian_noise", "shot_noise", "motion_blur", "fog")  # the others draw nothing


def _scene(seed: int, height: int = 96, width: int = 192) -> torch.Tensor:
    return torch.from_numpy(make_scene(seed, height, width).image).permute(2, 0, 1).contiguous()


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_zero_is_the_image_and_others_keep_shape_and_dtype(name):
    image = _scene(0)
    assert corrupt(image, name, 0, seed=3, index=5) is image
    for severity in SEVERITIES:
        out = corrupt(image, name, severity, seed=3, index=5)
        assert out.shape == image.shape and out.dtype == torch.uint8
        assert not torch.equal(out, image)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_same_seed_and_index_give_the_same_image_another_index_other_noise(name):
    image = _scene(1)
    first = corrupt(image, name, 3, seed=7, index=11)
    assert torch.equal(first, corrupt(image, name, 3, seed=7, index=11))
    other_index, other_seed = corrupt(image, name, 3, seed=7, index=12), corrupt(image, name, 3, seed=8, index=11)
    if name in RANDOM:
        assert not torch.equal(first, other_index) and not torch.equal(first, other_seed)
    else:
        assert torch.equal(first, other_index) and torch.equal(first, other_seed)


def _distortion(name: str, out: torch.Tensor, clean: torch.Tensor) -> float:
    """MSE to the clean image; for fog, 1 - correlation with it: fog's severities 3 and 4 leave the image the
    same weight (1 / (1 + 2.5)) and differ in the haze's roughness, which moves the MSE either way."""
    out, clean = out.double().flatten(), clean.double().flatten()
    if name == "fog":
        return 1 - torch.corrcoef(torch.stack([out, clean]))[0, 1].item()
    return ((out - clean) ** 2).mean().item()


@pytest.mark.parametrize("name", CORRUPTIONS)
@pytest.mark.parametrize("scene", [0, 1])
def test_distortion_grows_with_severity(name, scene):
    image = _scene(scene)
    distortion = [_distortion(name, corrupt(image, name, s, seed=0, index=scene), image) for s in (0, *SEVERITIES)]
    assert distortion[0] < 1e-12
    assert all(a < b for a, b in zip(distortion, distortion[1:])), distortion


@pytest.mark.parametrize("severity", [1, 2])
def test_gaussian_noise_has_the_tables_standard_deviation(severity):
    """On mid-grey, far from clipping at these severities: the sample std of 196,608 values is within 0.5% of
    the table's (its standard error is 0.16%); rounding to grey levels adds 1/12 grey level squared."""
    image = torch.full((3, 256, 256), 128, dtype=torch.uint8)
    noise = (corrupt(image, "gaussian_noise", severity, index=1).double() - 128) / 255
    std = PARAMETERS["gaussian_noise"][severity - 1]
    assert abs(noise.std().item() - std) < 0.005 * std
    assert abs(noise.mean().item()) < 3 * std / noise.numel() ** 0.5


def test_shot_noise_is_poisson_in_photons():
    """Poisson(x c) / c: mean x, variance x / c (severity 1, c = 60, mid-grey, no clipping)."""
    image = torch.full((3, 256, 256), 128, dtype=torch.uint8)
    out = corrupt(image, "shot_noise", 1, index=2).double() / 255
    x, c = 128 / 255, PARAMETERS["shot_noise"][0]
    assert abs(out.mean().item() - x) < 0.002
    assert abs(out.var().item() - x / c) < 0.02 * x / c


def test_noise_saturates_at_white_instead_of_wrapping():
    image = torch.full((3, 128, 128), 250, dtype=torch.uint8)
    out = corrupt(image, "gaussian_noise", 1, index=0)
    assert (out == 255).float().mean() > 0.3  # x + noise > 1 clipped, not wrapped to dark values
    assert out.min() > 250 - 6 * 0.08 * 255


@pytest.mark.parametrize("severity", SEVERITIES)
def test_brightness_adds_to_the_hsv_value(severity):
    """The reference goes through HSV with colorsys, pixel by pixel, as ImageNet-C does with skimage."""
    c = PARAMETERS["brightness"][severity - 1]
    image = torch.from_numpy(np.random.default_rng(severity).integers(0, 256, (3, 7, 9), dtype=np.uint8))
    image[:, 0, 0] = 0  # black: hue and saturation 0, becomes grey c
    expected = np.zeros(image.shape)
    for i in range(7):
        for j in range(9):
            h, s, v = colorsys.rgb_to_hsv(*(image[:, i, j].double() / 255).tolist())
            expected[:, i, j] = colorsys.hsv_to_rgb(h, s, min(v + c, 1.0))
    expected = np.round(expected * 255)
    out = corrupt(image, "brightness", severity).numpy()
    assert np.abs(out - expected).max() <= 1  # float32 against float64 at a rounding tie at most
    assert np.abs(out[:, 0, 0] - c * 255).max() <= 0.5 + 1e-4


@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast_scales_the_distance_to_each_channels_mean(severity):
    c = PARAMETERS["contrast"][severity - 1]
    image = _scene(2)
    x = image.double().numpy() / 255
    mean = x.mean(axis=(1, 2), keepdims=True)
    expected = np.round(np.clip((x - mean) * c + mean, 0, 1) * 255)
    assert np.abs(corrupt(image, "contrast", severity).numpy() - expected).max() <= 1


@pytest.mark.parametrize("name", ["motion_blur", "defocus_blur"])
@pytest.mark.parametrize("severity", SEVERITIES)
def test_blurs_keep_a_constant_image_and_the_mean(name, severity):
    """A blur moves intensity, never adds it: a constant image stays so exactly, and an image with texture
    inside a constant frame wider than the kernel keeps its mean up to rounding."""
    constant = torch.tensor([10, 128, 250], dtype=torch.uint8).view(3, 1, 1).expand(3, 80, 96).contiguous()
    assert torch.equal(corrupt(constant, name, severity, index=4), constant)
    framed = torch.full((3, 160, 180), 100, dtype=torch.uint8)  # motion blur reaches 40 pixels at severity 5
    framed[:, 45:-45, 45:-45] = torch.randint(0, 256, (3, 70, 90), generator=torch.Generator().manual_seed(0))
    out = corrupt(framed, name, severity, index=4)
    assert abs(out.double().mean() - framed.double().mean()) < 0.05
    assert torch.equal(out[:, :2], framed[:, :2])  # the frame's outer band is out of the blur's reach


def test_defocus_kernel_is_the_anti_aliased_disk():
    """The disk of radius r on the grid, blurred by the 3x3 (5x5 past radius 8) Gaussian of the table's sigma,
    computed here with numpy's mirrored padding; sums to 1."""
    for radius, sigma in PARAMETERS["defocus_blur"]:
        half = max(radius, 8)
        y, x = np.mgrid[-half : half + 1, -half : half + 1]
        disk = ((x**2 + y**2) <= radius**2).astype(float)
        disk /= disk.sum()
        k = 1 if radius <= 8 else 2
        g = np.exp(-(np.arange(-k, k + 1) ** 2) / (2 * sigma**2))
        g /= g.sum()
        padded = np.pad(disk, k, mode="reflect")
        n = disk.shape[0]
        blurred = sum(g[a] * g[b] * padded[a : a + n, b : b + n] for a in range(2 * k + 1) for b in range(2 * k + 1))
        expected = blurred / blurred.sum()
        assert np.allclose(defocus_kernel(radius, sigma).numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("index", range(4))
def test_motion_blur_of_a_point_is_a_one_sided_gaussian_trail(index):
    """A bright pixel spreads over 2 radius + 1 taps on one side of it, along a line within 45 degrees of the
    horizontal, itself keeping the first tap's weight of the one-sided Gaussian of the table's sigma."""
    image = torch.zeros(3, 101, 101, dtype=torch.uint8)
    image[:, 50, 50] = 255
    radius, sigma = PARAMETERS["motion_blur"][1]
    out = corrupt(image, "motion_blur", 2, index=index).double()[0]
    weights = np.exp(-(np.arange(2 * radius + 1) ** 2) / (2 * sigma**2))
    weights /= weights.sum()
    assert abs(out.sum().item() - 255) <= (2 * radius + 1) * 0.5  # mass kept, up to rounding at each tap
    assert abs(out[50, 50].item() - 255 * weights[0]) <= 0.5
    rows, columns = torch.nonzero(out, as_tuple=True)
    dy, dx = (rows - 50).double(), (columns - 50).double()
    assert (dx <= 0).all() and (dy.abs() <= dx.abs() + 1).all()  # to the left, at most 45 degrees off
    assert (dx.abs() <= 2 * radius).all()
    slope = (dy * dx).sum() / (dx * dx).sum()  # the trail is a line through the point: residuals < 1 pixel
    assert (dy - slope * dx).abs().max() < 1


def test_corruptions_leave_the_global_random_state_alone():
    image = _scene(3)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    for name in CORRUPTIONS:
        corrupt(image, name, 5, seed=1, index=2)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state))


def test_unknown_name_and_bad_severity_are_refused():
    with pytest.raises(ValueError, match="unknown corruption 'rain'; choose from gaussian_noise, shot_noise"):
        corrupt(_scene(0), "rain", 1)
    with pytest.raises(ValueError, match="severity 6 of fog: must be 0"):
        corrupt(_scene(0), "fog", 6)


def _config(root):
    return load_config(ROOT / "configs/demo.yaml", [f"data.root={root}"])


def test_corrupted_dataset_corrupts_before_the_transforms_by_index(synthetic_cityscapes):
    """Sample i = normalise(corrupt(raw image i, index=i)), whatever order or subset reads it (DDP ranks, workers)."""
    cfg = _config(synthetic_cityscapes)
    corruption = Corruption("gaussian_noise", 2, seed=5)
    dataset = build_dataset(cfg, "val", train=False, corruption=corruption)
    assert isinstance(dataset, CorruptedDataset) and dataset.classes == Cityscapes.classes
    raw = Cityscapes(synthetic_cityscapes, "val")
    normalise = eval_transforms(mean=cfg.data.mean, std=cfg.data.std)
    for index in reversed(range(len(raw))):
        sample, clean = dataset[index], raw[index]
        corrupted = tv_tensors.Image(corrupt(clean["image"], "gaussian_noise", 2, seed=5, index=index))
        expected, mask = normalise(corrupted, clean["mask"])
        assert torch.equal(sample["image"], expected) and torch.equal(sample["mask"], mask)
    assert not torch.equal(dataset[0]["image"], build_dataset(cfg, "val", train=False)[0]["image"])


def test_robustness_table_and_means():
    """sweep() scores clean and every (name, severity) once; the table shows those numbers in %."""
    calls = []

    def score(corruption):
        calls.append(corruption)
        miou = 0.8 if corruption is None else 0.8 - 0.1 * corruption.severity * (1 + (corruption.name == "fog"))
        return {"miou": miou, "pixel_accuracy": 0.9, "mean_accuracy": 0.7, "iou": [miou]}

    results = robustness.sweep(score, robustness.corruption_names(["fog", "jpeg"]), seed=3)
    assert calls[0] is None and calls[1:] == [Corruption(n, s, 3) for n in ("jpeg", "fog") for s in SEVERITIES]
    assert results["corruptions"]["jpeg"]["mean_miou"] == pytest.approx(0.5)
    assert results["corruptions"]["fog"]["mean_miou"] == pytest.approx(0.2)
    assert results["mean_corruption_miou"] == pytest.approx(0.35)
    assert results["relative_miou"] == pytest.approx(0.35 / 0.8)
    lines = robustness.format_table(results).splitlines()
    assert lines[1].split() == ["jpeg", "70.00", "60.00", "50.00", "40.00", "30.00", "50.00"]
    assert lines[2].split() == ["fog", "60.00", "40.00", "20.00", "0.00", "-20.00", "20.00"]
    assert re.fullmatch(r"clean mIoU 80\.00; mean corruption mIoU 35\.00 \(43\.[78]% of clean\)", lines[3])  # 43.75
    assert robustness.corruption_names(["all"]) == list(CORRUPTIONS)


# --- eval.py end to end --------------------------------------------------------------------------

TINY = ["model.backbone.depth=50", "model.backbone.stage_blocks=[1, 1, 2, 3]", "model.backbone.base_width=8"]
TINY.append("model.backbone.multi_grid=[1, 2, 4]")
WHOLE = ["--mode", "whole", "--no-flip", "eval.fast=false", "train.num_workers=0", *TINY]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    full = config_to_dict(tiny_config())
    full["model"]["num_classes"] = 19
    model = build_model(config_from_dict(full), load_pretrained=False)
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    torch.save({"model": model.state_dict(), "config": full}, path)
    return path, model.eval()


def _eval(root, checkpoint, *args):
    return eval_script.main(["--config", str(ROOT / "configs/demo.yaml"), "--checkpoint", str(checkpoint)] + [
        f"data.root={root}", *WHOLE, *args
    ])  # fmt: skip


def _reference_miou(root, model, corruption, images=None):
    """The model on each corrupted, normalised image, whole and unflipped; IoU over present classes by hand."""
    cfg = _config(root)
    raw = Cityscapes(root, "val")
    normalise = eval_transforms(mean=cfg.data.mean, std=cfg.data.std)
    counts = np.zeros((19, 19))
    for index in range(images or len(raw)):
        sample = raw[index]
        if corruption is not None:
            name, severity, seed = corruption
            sample["image"] = tv_tensors.Image(corrupt(sample["image"], name, severity, seed=seed, index=index))
        image, _ = normalise(sample["image"], sample["mask"])
        with torch.no_grad():
            prediction = model(image[None])["out"][0].argmax(0).numpy().ravel()
        truth = sample["mask"].numpy().ravel()
        valid = truth != 255
        np.add.at(counts, (truth[valid], prediction[valid]), 1)
    tp, union = np.diag(counts), counts.sum(0) + counts.sum(1) - np.diag(counts)
    return (tp[union > 0] / union[union > 0]).mean()  # over the classes present in truth or prediction


@pytest.mark.slow
def test_eval_under_one_corruption_scores_the_corrupted_images(synthetic_cityscapes, checkpoint, tmp_path, capsys):
    path, model = checkpoint
    assert _eval(synthetic_cityscapes, path, "--corruption", "gaussian_noise", "--severity", "3") == 0
    out = capsys.readouterr().out
    assert "corruption: gaussian_noise, severity 3, seed 0" in out
    written = re.search(r"wrote (\S+)", out).group(1)
    assert written.endswith("_gaussian_noise3.json")
    results = json.loads(open(written).read())
    assert (results["corruption"], results["severity"], results["corruption_seed"]) == ("gaussian_noise", 3, 0)
    expected = _reference_miou(synthetic_cityscapes, model, ("gaussian_noise", 3, 0))
    assert results["miou"] == pytest.approx(expected, abs=1e-6)
    assert abs(expected - _reference_miou(synthetic_cityscapes, model, None)) > 1e-5  # the noise changed predictions


@pytest.mark.slow
def test_eval_corruptions_prints_the_table_of_its_json(synthetic_cityscapes, checkpoint, tmp_path, capsys):
    path, model = checkpoint
    out_file = tmp_path / "robust.json"
    args = ["--corruptions", "jpeg", "gaussian_noise", "--max-images", "2", "--out", str(out_file)]
    assert _eval(synthetic_cityscapes, path, *args) == 0
    printed = capsys.readouterr().out.splitlines()
    results = json.loads(out_file.read_text())
    assert list(results["corruptions"]) == ["gaussian_noise", "jpeg"]  # the table's order, not the command's
    header = next(i for i, line in enumerate(printed) if line.split()[:1] == ["corruption"])
    assert printed[header].split() == ["corruption", "1", "2", "3", "4", "5", "mean"]
    for line, (name, row) in zip(printed[header + 1 :], results["corruptions"].items()):
        values = [row[str(s)]["miou"] for s in SEVERITIES] + [row["mean_miou"]]
        assert line.split() == [name, *(f"{100 * v:.2f}" for v in values)]
    clean, mean = 100 * results["clean"]["miou"], 100 * results["mean_corruption_miou"]
    assert printed[header + 3].startswith(f"clean mIoU {clean:.2f}; mean corruption mIoU {mean:.2f}")
    reference = _reference_miou(synthetic_cityscapes, model, ("gaussian_noise", 3, 0), images=2)
    assert results["corruptions"]["gaussian_noise"]["3"]["miou"] == pytest.approx(reference, abs=1e-6)
    clean = _reference_miou(synthetic_cityscapes, model, None, images=2)
    assert results["clean"]["miou"] == pytest.approx(clean, abs=1e-6)
    assert results["timing"]["evaluations"] == 11 and results["corruption_seed"] == 0


def _one_line_error(capsys, args):
    from utils.cli import run

    argv = ["--config", str(ROOT / "configs/demo.yaml"), "--checkpoint", "x", *args]
    with pytest.raises(SystemExit) as exit_:  # argparse's errors exit; run() returns 2 for the others
        raise SystemExit(run(eval_script.main, argv))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            "--corruption rain --severity 1",
            "argument --corruption: invalid choice: 'rain' (choose from 'gaussian_noise',",
        ),
        ("--corruption fog --severity 6", "argument --severity: invalid choice: 6 (choose from 1, 2, 3, 4, 5)"),
        ("--corruption fog", "--corruption fog needs --severity 1..5"),
        ("--severity 2", "--severity is the severity of --corruption NAME"),
        ("--corruptions all rain", "--corruptions: invalid choice: 'rain' (choose from 'all', 'gaussian_noise',"),
        ("--corruptions all --corruption fog --severity 1", "argument --corruption: not allowed with argument"),
        ("--corruptions fog --save-pred out", "--save-pred keeps the predictions of one evaluation"),
        ("--corruption fog --severity 1 --corruption-seed -1", "--corruption-seed -1: must be >= 0"),
    ],
)
def test_corruption_flag_errors_are_one_line_naming_the_flag(capsys, flags, message):
    assert message in _one_line_error(capsys, flags.split())


def test_default_results_file_names_the_corruption(tmp_path):
    cfg = _config(tmp_path)
    args = eval_script.parse_args(["--config", "c", "--checkpoint", str(tmp_path / "m.pth"), "--corruption", "fog"] + [
        "--severity", "2"
    ])  # fmt: skip
    path = eval_script.results_path(args, "val", cfg.eval.only())
    assert path.name == f"eval_val_{cfg.eval.only().slug()}_fog2.json"
    args = eval_script.parse_args(["--config", "c", "--checkpoint", str(tmp_path / "m.pth"), "--corruptions", "all"])
    assert eval_script.results_path(args, "val", cfg.eval.only()).name.endswith("_corruptions.json")


def test_blur_matches_a_direct_convolution():
    """defocus_blur is the kernel correlated with the image mirrored at its borders (checked with conv2d)."""
    image = _scene(4)
    kernel = defocus_kernel(*PARAMETERS["defocus_blur"][2])
    half = kernel.shape[0] // 2
    x = torch.from_numpy(np.pad(image.double().numpy() / 255, ((0, 0), (half, half), (half, half)), mode="reflect"))
    expected = torch.stack([F.conv2d(x[c][None, None], kernel[None, None])[0, 0] for c in range(3)])
    expected = (expected.clamp(0, 1) * 255).round()
    assert (corrupt(image, "defocus_blur", 3).double() - expected).abs().max() <= 1


def test_the_documented_parameter_table_is_the_codes():
    """docs/evaluation.md's table of parameters per severity is PARAMETERS, row for row."""
    text = (ROOT / "docs/evaluation.md").read_text()
    for name, values in PARAMETERS.items():
        row = re.search(rf"^\| `{name}` \|.*$", text, re.M)
        assert row, name
        cells = [cell.strip() for cell in row.group(0).strip("|").split("|")][-5:]
        expected = [", ".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in values]
        assert cells == expected, name
