"""eval.py and predict.py end to end: agreement with the official Cityscapes evaluator, submissions, DDP."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import eval as eval_script
from conftest import ROOT, png_header, tiny_config
from datasets import Cityscapes
from datasets.cityscapes import CLASSES, LABEL_ID_TO_TRAIN_ID
from models import build_model
from utils.metrics import ConfusionMatrix
from utils.records import load_records

TINY = [
    "model.backbone.depth=50",
    "model.backbone.stage_blocks=[1, 1, 2, 3]",
    "model.backbone.base_width=8",
    "model.backbone.multi_grid=[1, 2, 4]",
    "train.num_workers=0",
]


def _official_evaluator(monkeypatch, tmp_path):
    """cityscapesscripts' pixel-level evaluator, importable without a Cityscapes install."""
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path))
    monkeypatch.setenv("CITYSCAPES_EXPORT_DIR", str(tmp_path))
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as evaluator

    evaluator.args.evalInstLevelScore = False
    evaluator.args.quiet = True
    evaluator.args.JSONOutput = False
    evaluator.args.predictionWalk = None
    return evaluator


def _label_ids(train_ids: np.ndarray) -> np.ndarray:
    table = np.zeros(256, np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        if train_id != 255:
            table[train_id] = label_id
    return table[train_ids]


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_equal_the_official_cityscapes_evaluator(synthetic_cityscapes, tmp_path, monkeypatch, seed):
    """Random predictions over a subset of classes (so some are absent from both), scored both ways."""
    evaluator = _official_evaluator(monkeypatch, tmp_path)
    rng = np.random.default_rng(seed)
    dataset = Cityscapes(synthetic_cityscapes, "val")
    ours = ConfusionMatrix(19)
    predictions, truths = [], []
    for i, (_, gt_path) in enumerate(dataset.samples):
        truth = dataset.load_mask(i).numpy()
        noise = rng.choice([0, 1, 2, 5, 7, 8, 13, 14], size=truth.shape)  # 14 (truck) never in the ground truth
        prediction = np.where((rng.random(truth.shape) < 0.6) & (truth != 255), truth, noise).astype(np.uint8)
        ours.update(torch.from_numpy(prediction), torch.from_numpy(truth))
        path = tmp_path / "pred" / f"{dataset.name(i)}_leftImg8bit.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(_label_ids(prediction)).save(path)
        predictions.append(str(path))
        truths.append(str(gt_path))
    official = evaluator.evaluateImgLists(predictions, truths, evaluator.args)
    metrics = ours.compute()
    for name, iou in zip(CLASSES, metrics["iou"]):
        reference = official["classScores"][name]
        assert (np.isnan(iou) and np.isnan(reference)) or abs(iou - reference) < 1e-6, name
    assert abs(metrics["miou"] - official["averageScoreClasses"]) < 1e-6
    assert 0 < sum(np.isnan(metrics["iou"])) < 19  # some classes absent, some present


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A randomly initialised tiny SPNet, saved as eval.py expects; the protocols are what is tested."""
    torch.manual_seed(0)
    cfg = tiny_config()
    from utils.config import config_from_dict, config_to_dict

    full = config_to_dict(cfg)
    full["model"]["num_classes"] = 19
    model = build_model(config_from_dict(full), load_pretrained=False)
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    torch.save({"model": model.state_dict(), "config": full}, path)
    return path


def _eval(root, checkpoint, *args):
    return eval_script.main(
        [
            "--config",
            str(ROOT / "configs/demo.yaml"),
            "--checkpoint",
            str(checkpoint),
            f"data.root={root}",
            *TINY,
            *args,
        ]
    )


@pytest.mark.slow
def test_eval_submission_files_score_like_the_official_evaluator(
    synthetic_cityscapes, checkpoint, tmp_path, monkeypatch
):
    evaluator = _official_evaluator(monkeypatch, tmp_path)
    out = tmp_path / "results.json"
    code = _eval(
        synthetic_cityscapes,
        checkpoint,
        "--save-pred",
        str(tmp_path / "sub"),
        "--format",
        "cityscapes-submission",
        "--out",
        str(out),
        "--crop",
        "32",
        "32",
        "--base-size",
        "96",
    )
    assert code == 0
    results = json.loads(out.read_text())
    predictions = sorted((tmp_path / "sub").glob("*_leftImg8bit.png"))
    assert len(predictions) == 3 and results["num_images"] == 3
    assert set(np.unique(np.concatenate([np.asarray(Image.open(p)).ravel() for p in predictions]))) <= set(
        LABEL_ID_TO_TRAIN_ID
    )
    truths = [str(p) for p in sorted((synthetic_cityscapes / "gtFine/val").glob("*/*_labelIds.png"))]
    truths = sorted(truths, key=lambda p: os.path.basename(p))
    official = evaluator.evaluateImgLists([str(p) for p in predictions], truths, evaluator.args)
    assert abs(results["miou"] - official["averageScoreClasses"]) < 1e-6
    for name, iou in results["per_class_iou"].items():
        reference = official["classScores"][name]
        assert (iou is None and np.isnan(reference)) or abs(iou - reference) < 1e-6, name
    assert list(results["per_class_iou"]) == list(CLASSES)
    assert 0 <= results["pixel_accuracy"] <= 1 and 0 <= results["mean_accuracy"] <= 1
    assert results["protocol"]["profile"] == "spnet" and results["protocol"]["flip"] is True
    assert len(results["checkpoint_sha256"]) == 64 and results["timing"]["seconds"] > 0
    # the official SPNet code averages all 19 classes, absent ones as 0: the other convention, named so
    assert (
        results["miou_definition"].startswith("mean IoU over the ")
        and "of 19 classes present" in results["miou_definition"]
    )
    assert 0 < results["miou_other_conventions"]["all_classes_absent_as_0"] < results["miou"]


@pytest.mark.slow
def test_test_split_writes_a_submission_without_scores(synthetic_cityscapes, checkpoint, tmp_path):
    assert (
        _eval(
            synthetic_cityscapes,
            checkpoint,
            "--split",
            "test",
            "--mode",
            "whole",
            "--save-pred",
            str(tmp_path / "test"),
            "--format",
            "cityscapes-submission",
        )
        == 0
    )
    files = sorted((tmp_path / "test").glob("*.png"))
    assert [f.name for f in files] == [
        p.name for p in sorted((synthetic_cityscapes / "leftImg8bit/test").glob("*/*.png"))
    ]


@pytest.mark.slow
def test_ddp_evaluation_matches_single_process(synthetic_cityscapes, checkpoint, tmp_path):
    """2 gloo processes on 3 images (not divisible): the same confusion matrix, every image once."""
    single = tmp_path / "single.json"
    assert (
        _eval(
            synthetic_cityscapes,
            checkpoint,
            "--out",
            str(single),
            "--mode",
            "whole",
            "--save-pred",
            str(tmp_path / "p1"),
        )
        == 0
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "eval.py"),
        "--config",
        str(ROOT / "configs/demo.yaml"),
        "--checkpoint",
        str(checkpoint),
        f"data.root={synthetic_cityscapes}",
        *TINY,
        "--out",
        str(tmp_path / "ddp.json"),
        "--mode",
        "whole",
        "--save-pred",
        str(tmp_path / "p2"),
    ]
    result = subprocess.run(
        command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    a, b = json.loads(single.read_text()), json.loads((tmp_path / "ddp.json").read_text())
    assert b["world_size"] == 2 and a["num_images"] == b["num_images"] == 3
    for key in ("miou", "pixel_accuracy", "mean_accuracy", "per_class_iou", "miou_other_conventions"):
        assert a[key] == b[key], key
    for path in sorted((tmp_path / "p1").glob("*.png")):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(tmp_path / "p2" / path.name)))
    # the per-image records, gathered from both processes in dataset order: each image's counts from its
    # saved prediction, their sums the confusion matrix's (through the JSON's mIoU)
    one, two = load_records(tmp_path / "single.records.npz"), load_records(tmp_path / "ddp.records.npz")
    dataset = Cityscapes(synthetic_cityscapes, "val")
    assert two.names.tolist() == [dataset.name(i) for i in range(3)] and two.indices.tolist() == [0, 1, 2]
    matrix = ConfusionMatrix(19)
    for i, name in enumerate(two.names):
        prediction = torch.from_numpy(np.asarray(Image.open(tmp_path / "p2" / f"{name}.png")).astype(np.int64))
        image = ConfusionMatrix(19)
        image.update(prediction, dataset.load_mask(i))
        m = image.matrix.numpy()
        assert np.array_equal(two.intersection[i], np.diag(m)) and np.array_equal(two.gt_pixels[i], m.sum(1))
        assert np.array_equal(two.union[i], m.sum(0) + m.sum(1) - np.diag(m))
        matrix.update(prediction, dataset.load_mask(i))
    m = matrix.matrix.numpy()
    assert np.array_equal(two.intersection.sum(0), np.diag(m)) and np.array_equal(two.gt_pixels.sum(0), m.sum(1))
    assert np.array_equal(two.union.sum(0), m.sum(0) + m.sum(1) - np.diag(m))
    assert np.array_equal(two.confusion, m)  # summed over both processes
    for key in ("names", "indices", "intersection", "union", "gt_pixels", "confusion"):
        assert np.array_equal(getattr(one, key), getattr(two, key)), key
    assert two.miou() == pytest.approx(b["miou"], abs=1e-12) and two.protocol == "spnet_whole_s1_flip"
    assert two.classes == CLASSES and two.over_all_classes is False


@pytest.mark.slow
def test_predict_writes_masks_and_overlays_like_eval(synthetic_cityscapes, checkpoint, tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import predict

    assert _eval(synthetic_cityscapes, checkpoint, "--save-pred", str(tmp_path / "eval"), "--crop", "32", "32") == 0
    folder = synthetic_cityscapes / "leftImg8bit/val"
    assert (
        predict.main(
            [
                "--config",
                str(ROOT / "configs/demo.yaml"),
                "--checkpoint",
                str(checkpoint),
                "--input",
                str(folder),
                "--output",
                str(tmp_path / "predict"),
                "--crop",
                "32",
                "32",
                *TINY,
            ]
        )
        == 0
    )
    for image in sorted(folder.glob("*/*.png")):  # the output mirrors the input's city folders
        mask = np.asarray(Image.open(tmp_path / "predict" / image.parent.name / f"{image.stem}.png"))
        overlay = Image.open(tmp_path / "predict" / image.parent.name / f"{image.stem}_color.png")
        width, height = Image.open(image).size  # the overlay has the legend of the classes present beneath
        assert overlay.width == width and overlay.height > height and overlay.mode == "RGB"
        name = image.stem.removesuffix("_leftImg8bit")
        assert np.array_equal(mask, np.asarray(Image.open(tmp_path / "eval" / f"{name}.png")))  # the same inference


def _predict(checkpoint, *args: str) -> int:
    """scripts/predict.py through utils.cli.run, as on the command line."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import predict

    from utils.cli import run

    config = ["--config", str(ROOT / "configs/demo.yaml"), "--checkpoint", str(checkpoint), "--crop", "32", "32"]
    return run(predict.main, [*config, *TINY, *args])


@pytest.mark.slow
def test_predict_names_an_image_over_the_pixel_limit_and_its_flag(synthetic_cityscapes, checkpoint, tmp_path, capsys):
    """Was: Pillow's DecompressionBombError, a traceback without the file name."""
    huge = tmp_path / "huge.png"
    png_header(huge, 20000, 10000)
    assert _predict(checkpoint, "--input", str(huge), "--output", str(tmp_path / "out")) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: image {huge} is 20000x10000 = 200,000,000 pixels, over the limit of {2 * Image.MAX_IMAGE_PIXELS:,} "
        "(Pillow's guard against decompression bombs); if you trust the file, raise the limit: --max-pixels 200000000"
    )
    image = sorted((synthetic_cityscapes / "leftImg8bit/val").glob("*/*.png"))[0]
    args = ["--input", str(image), "--output", str(tmp_path / "out")]
    assert _predict(checkpoint, *args, "--max-pixels", "8000") == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: image {image} is 128x64 = 8,192 pixels, over the limit of 8,000 (set by --max-pixels); if you trust "
        "the file, raise the limit: --max-pixels 8192"
    )
    assert _predict(checkpoint, *args, "--max-pixels", "8192") == 0
    assert (tmp_path / "out" / f"{image.stem}.png").is_file()


@pytest.mark.slow
def test_predict_into_its_input_folder_twice_and_past_a_planted_link(
    synthetic_cityscapes, checkpoint, tmp_path, capsys
):
    """Was: the second run predicted the first run's outputs too; a link at an output path had its target written."""
    photos = tmp_path / "photos"
    shutil.copytree(synthetic_cityscapes / "leftImg8bit/val", photos)
    inputs = sorted(photos.rglob("*.png"))
    out = photos / "predictions"
    victim = tmp_path / "precious.png"
    victim.write_bytes(b"not yours to overwrite")
    planted = out / inputs[0].relative_to(photos).with_suffix("")
    planted = planted.with_name(f"{planted.name}_color.png")
    planted.parent.mkdir(parents=True)
    planted.symlink_to(victim)
    for _ in range(2):
        assert _predict(checkpoint, "--input", str(photos), "--output", str(out)) == 0
        assert capsys.readouterr().out.splitlines()[-1] == f"wrote {2 * len(inputs)} files to {out}"
    assert victim.read_bytes() == b"not yours to overwrite" and not planted.is_symlink()
    expected = [
        image.relative_to(photos).with_name(f"{image.stem}{end}") for image in inputs for end in (".png", "_color.png")
    ]
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == sorted(expected)


@pytest.mark.slow
def test_fused_inference_equals_the_model_as_trained(synthetic_cityscapes, tmp_path):
    """--fuse (the default) folds every conv+BN pair: the same predictions as --no-fuse, up to rounding."""
    torch.manual_seed(1)
    from utils.config import config_from_dict, config_to_dict

    full = config_to_dict(tiny_config())
    full["model"]["num_classes"] = 19
    model = build_model(config_from_dict(full), load_pretrained=False)
    for m in model.modules():  # trained-looking statistics, so that folding changes every weight
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
    path = tmp_path / "model.pth"
    torch.save({"model": model.state_dict(), "config": full}, path)
    results = {}
    for flag in ("--fuse", "--no-fuse"):
        out, pred = tmp_path / f"{flag}.json", tmp_path / flag
        assert (
            _eval(synthetic_cityscapes, path, flag, "--mode", "whole", "--out", str(out), "--save-pred", str(pred)) == 0
        )
        results[flag] = json.loads(out.read_text())
    assert results["--fuse"]["fused"] is True and results["--no-fuse"]["fused"] is False
    assert abs(results["--fuse"]["miou"] - results["--no-fuse"]["miou"]) < 1e-3
    same = [
        np.mean(np.asarray(Image.open(p)) == np.asarray(Image.open(tmp_path / "--no-fuse" / p.name)))
        for p in sorted((tmp_path / "--fuse").glob("*.png"))
    ]
    assert len(same) == 3 and min(same) > 0.999


def test_resize_to_flag_sets_mmseg_image_size(capsys):
    """ADE20K as mmseg tests it: img_scale (2048, 512) and the stride of its 512x512 configs, 341 (2/3 is 341.3)."""
    flags = "--print-protocol --profile mmseg --resize-to 2048 512 --crop 512 512".split()
    assert eval_script.main(["--config", str(ROOT / "configs/ade20k/spnet_r50.yaml"), *flags]) == 0
    line = "mmseg rules, sliding window 512x512 stride 341x341, image resized to 2048x512, scales 1, flip\n"
    assert capsys.readouterr().out == line


def test_mmseg_crop_without_a_config_stride_is_a_one_line_error(capsys):
    from utils.cli import run

    flags = "--print-protocol --profile mmseg --crop 700 700".split()
    assert run(eval_script.main, ["--config", str(ROOT / "configs/demo.yaml"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --profile, --crop: mmseg has no config with a 700x700 sliding window")
    assert err.count("\n") == 1
    assert err.rstrip().endswith("set eval.stride or --stride H W")


def _one_line_error(capsys, *args: str) -> str:
    from utils.cli import run

    assert run(eval_script.main, ["--config", str(ROOT / "configs/demo.yaml"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip().removeprefix("error: ")


@pytest.mark.parametrize(
    "flags, message",
    [
        ("--stride 0 0", "--stride: eval.stride[0] = 0 must be >= 1"),
        ("--crop 0 0", "--crop: eval.crop_size[0] = 0 must be >= 1"),
        ("--scales 0", "--scales: eval.scales[0] = 0.0 must be > 0 (e.g. [1.0],"),
        ("--scales 1 -1", "--scales: eval.scales[1] = -1.0 must be > 0 (e.g. [1.0],"),
        ("--window-batch 0", "--window-batch: eval.window_batch = 0 must be >= 1"),
        ("--base-size 0", "--base-size: eval.base_size = 0 must be >= 1"),
        ("--resize-to 2048 -1", "--resize-to: eval.resize_to[1] = -1 must be >= 1"),
        ("--stride 300 300", "--stride: eval.stride = [300, 300] is larger than eval.crop_size = [256, 256]"),
        ("eval.scales=[] --mode whole", f"{ROOT / 'configs/demo.yaml'}: eval.scales = [] must have at least 1"),
    ],
)
def test_protocol_flags_are_checked_as_the_config_keys_are(capsys, flags, message):
    """The flags go through the config's checks: no ZeroDivisionError, no interpolate error, no silent 0."""
    assert _one_line_error(capsys, "--print-protocol", *flags.split()).startswith(message)


def test_valid_protocol_flags_override_the_config(capsys):
    flags = "--print-protocol --crop 128 128 --stride 100 128 --scales 0.5 1 --no-flip --window-batch 2".split()
    assert eval_script.main(["--config", str(ROOT / "configs/demo.yaml"), *flags]) == 0
    line = "spnet rules, sliding window 128x128 stride 100x128, image at its own size, scales 0.5, 1, no flip\n"
    assert capsys.readouterr().out == line


@pytest.mark.parametrize("count", ["0", "-3"])
def test_max_images_below_one_is_refused(capsys, tmp_path, count):
    message = _one_line_error(capsys, "--checkpoint", str(tmp_path / "none.pth"), "--max-images", count)
    assert message == f"--max-images {count}: must be >= 1 (leave it out to evaluate every image)"


def test_eval_refuses_before_loading_anything(capsys, tmp_path):
    """A folder as --out, fp16 on the CPU, a missing GPU: refused before the model loads (the checkpoint is
    not even a checkpoint), not after an evaluation."""
    checkpoint = tmp_path / "not_a_checkpoint.pth"
    checkpoint.write_text("never read")
    base = ["--checkpoint", str(checkpoint), "--out"]
    message = _one_line_error(capsys, *base, str(tmp_path))
    assert message == f"--out {tmp_path} is a folder; name the results file, e.g. {tmp_path / 'eval_val.json'}"
    assert not list(tmp_path.glob("eval_*.json"))
    if not torch.cuda.is_available():
        out = str(tmp_path / "r.json")
        assert _one_line_error(capsys, *base, out, "eval.amp=fp16") == (
            "eval.amp=fp16 needs a GPU; use eval.amp=bf16 on the CPU"
        )
        assert _one_line_error(capsys, *base, out, "train.device=cuda").startswith(
            "train.device=cuda, but torch sees no GPU (torch.cuda.is_available() is False); use train.device=cpu"
        )


@pytest.mark.slow
def test_eval_creates_its_output_folder_and_writes_json_for_a_test_split(
    synthetic_cityscapes, checkpoint, tmp_path, capsys
):
    base = [
        "--config",
        str(ROOT / "configs/demo.yaml"),
        "--checkpoint",
        str(checkpoint),
        f"data.root={synthetic_cityscapes}",
        *TINY,
    ]
    out = tmp_path / "new" / "folder" / "val.json"
    assert eval_script.main([*base, "--mode", "whole", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["scored"] is True and results["protocol_text"].startswith("spnet rules, whole image")
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"protocol: {results['protocol_text']}"  # before anything else ...
    table = printed.index(f"protocol: {results['protocol_text']}", 1)  # ... and heading the results table
    assert printed[table + 1].startswith("class ")
    # one result, with its definition; words, not reprs (FastPaths(...), Protocol(...))
    assert printed[-2] == (
        f"result: mIoU {100 * results['miou']:.2f}, the {results['miou_definition']}; " + printed[-2].split("; ", 1)[1]
    )
    assert "fast paths: all on; channels_last True; compile False" in printed
    assert not any("(reuse_memory=" in line or "Protocol(" in line for line in printed)
    test_out = tmp_path / "other" / "test.json"
    assert eval_script.main([*base, "--split", "test", "--mode", "whole", "--out", str(test_out)]) == 0
    test = json.loads(test_out.read_text())
    assert test["scored"] is False and test["split"] == "test" and test["num_images"] == 2 and "miou" not in test


def test_eval_refuses_an_unwritable_output_before_evaluating(checkpoint, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match=r"--out: cannot write into .*file/sub"):
        eval_script.main(
            [
                "--config",
                str(ROOT / "configs/demo.yaml"),
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(blocker / "sub" / "r.json"),
            ]
        )


def test_eval_on_a_root_without_a_test_split_is_one_line(synthetic_folder, checkpoint):
    result = subprocess.run(
        [sys.executable, "eval.py", "--config", "configs/demo.yaml", "--checkpoint", str(checkpoint), "--split", "test",
         f"data.root={synthetic_folder}"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: folder not found: ") and "leftImg8bit/test" in result.stderr


def test_eval_help_explains_every_protocol_flag(capsys):
    with pytest.raises(SystemExit):
        eval_script.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "test protocol (default: the config's eval section; docs/evaluation.md)" in text
    for flag, words in (
        ("--profile", "whose resize / window / flip rules to follow"),
        ("--mode", "whole image in one pass, or sliding windows (eval.mode)"),
        ("--flip, --no-flip", "average with the horizontally flipped image (eval.flip;"),
        ("--fuse, --no-fuse", "fold every conv+BatchNorm pair"),
        ("--print-protocol", "print the resulting protocol in one line and exit"),
    ):
        assert flag in text and words in text, flag


def test_default_results_file_is_named_after_the_protocol_and_never_takes_another_protocols(tmp_path):
    """A second protocol on the same checkpoint used to overwrite the first one's eval_val.json."""
    from utils.config import load_config

    checkpoint = tmp_path / "best.pth"
    args = eval_script.parse_args(["--config", str(ROOT / "configs/demo.yaml"), "--checkpoint", str(checkpoint)])
    cfg = load_config(ROOT / "configs/demo.yaml")
    single = cfg.eval.only()
    path = eval_script.results_path(args, "val", single)
    assert path == tmp_path / "eval_val_spnet_slide256_s1_flip.json"
    multi = eval_script.results_path(args, "val", dataclasses.replace(single, scales=(0.5, 1.0)))
    assert multi == tmp_path / "eval_val_spnet_slide256_s0.5-1_flip.json"

    path.write_text(json.dumps({"protocol_text": str(single)}))
    assert eval_script.results_path(args, "val", single) == path  # the same protocol again: its own file
    other = dataclasses.replace(single, base_size=1024)  # a field the name does not hold
    assert other.slug() == single.slug()
    with pytest.raises(ValueError, match=r"eval_val_spnet_slide256_s1_flip.json holds the results of another protocol"):
        eval_script.results_path(args, "val", other)
    args.out = tmp_path / "mine.json"
    assert eval_script.results_path(args, "val", other) == args.out  # --out: the user's name


@pytest.mark.slow
def test_eval_twice_then_compare_runs_prints_intervals_and_a_verdict(
    synthetic_cityscapes, checkpoint, tmp_path, capsys
):
    """Two protocols of one checkpoint: their records, compared; the printed table holds --json's numbers."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import compare_runs

    runs = []
    for flag in ("--no-flip", "--flip"):
        out = tmp_path / f"{flag[2:]}.json"
        assert _eval(synthetic_cityscapes, checkpoint, "--mode", "whole", flag, "--out", str(out)) == 0
        assert (tmp_path / f"{flag[2:]}.records.npz").is_file()
        runs.append(json.loads(out.read_text()))
    capsys.readouterr()
    args = [
        str(tmp_path / "no-flip.json"),
        str(tmp_path / "flip.json"),
        "--labels",
        "plain",
        "flip",
        "--samples",
        "500",
    ]
    assert compare_runs.main([*args, "--json", str(tmp_path / "c.json")]) == 0
    printed = capsys.readouterr().out.splitlines()
    result = json.loads((tmp_path / "c.json").read_text())
    assert printed[0].startswith("3 images, 500 paired bootstrap samples and permutations, 95% intervals, seed 0")
    numbers = [[float(x) for x in re.findall(r"-?\d+\.\d+", line)] for line in printed[2:4]]
    plain, flip = result["runs"]
    versus = flip["versus_first"]
    assert numbers[0] == [round(100 * x, 2) for x in (plain["miou"], *plain["ci"])]
    expected = [flip["miou"], *flip["ci"], versus["difference"], *versus["ci"]]
    assert numbers[1] == [round(100 * x, 2) for x in expected] + [round(versus["p"], 4)]
    assert printed[3].endswith(versus["verdict"]) and versus["verdict"] in (
        "flip better",
        "within noise",
        "plain better",
    )
    assert plain["miou"] == pytest.approx(runs[0]["miou"], abs=1e-12) and flip["miou"] == pytest.approx(
        runs[1]["miou"], abs=1e-12
    )
    assert plain["ci"][0] <= plain["miou"] <= plain["ci"][1] and plain["protocols"] == ["spnet_whole_s1_noflip"]
