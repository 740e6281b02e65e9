"""What a new user hits: config ranges, results files, the protocol printed with every number, finished runs,
test splits, predict's outputs, and the README's Python snippet run as a script."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_config
from utils.config import ConfigError, load_config
from utils.results import json_safe, write_json


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_iters=0", "train.max_iters = 0 must be >= 1"),
        ("train.max_iters=-5", "train.max_iters = -5 must be >= 1"),
        ("train.log_interval=0", "train.log_interval = 0 must be >= 1"),
        ("train.checkpoint_interval=0", "train.checkpoint_interval = 0 must be >= 1"),
        ("train.eval_interval=-1", "train.eval_interval = -1 must be >= 0 (0: validate only at the end)"),
        ("train.keep_checkpoints=-2", "train.keep_checkpoints = -2 must be >= 0 (0: only last.pth and best.pth)"),
        ("train.eval_max_images=0", "train.eval_max_images = 0 must be >= 1 (null: every validation image)"),
        ("train.epochs=0", "train.epochs = 0.0 must be > 0"),
        ("train.batch_size=0", "train.batch_size = 0 must be >= 1"),
        ("optim.lr=-0.1", "optim.lr = -0.1 must be > 0"),
        ("data.augment.flip_prob=1.5", "data.augment.flip_prob = 1.5 must be >= 0 and <= 1"),
        ("model.num_classes=0", "model.num_classes = 0 must be >= 1"),
    ],
)
def test_config_ranges_are_checked_at_load_with_the_key_named(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "configs/demo.yaml", [override])
    assert str(err.value) == f"{ROOT / 'configs/demo.yaml'}: {message}"


def test_valid_edge_values_load():
    cfg = load_config(
        ROOT / "configs/demo.yaml",
        ["train.eval_interval=0", "train.keep_checkpoints=0", "train.eval_max_images=null", "train.max_iters=1"],
    )
    assert (cfg.train.eval_interval, cfg.train.keep_checkpoints, cfg.train.eval_max_images) == (0, 0, None)


def test_one_json_writer_writes_null_for_nan(tmp_path):
    path = write_json(tmp_path / "sub" / "m.json", {"miou": float("nan"), "iou": [0.5, math.inf], "t": (1, 2)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"miou": None, "iou": [0.5, None], "t": [1, 2]}
    assert json_safe({"a": [float("nan")]}) == {"a": [None]}
    assert not list(tmp_path.glob("sub/.*.tmp"))  # the temporary file was renamed, not left behind


@pytest.mark.slow
def test_training_writes_strict_json_and_the_protocol_and_a_finished_run_is_left_alone(synthetic_cityscapes, tmp_path):
    import train

    work_dir = tmp_path / "run"
    args = [
        "--config", str(ROOT / "configs/demo.yaml"), f"data.root={synthetic_cityscapes}", f"train.work_dir={work_dir}",
        "model.backbone.depth=50", "model.backbone.stage_blocks=[1, 1, 1, 2]", "model.backbone.base_width=8",
        "model.backbone.multi_grid=[1, 2]", "data.augment.crop_size=[64, 128]", "train.batch_size=2",
        "train.num_workers=0", "train.max_iters=2", "train.eval_max_images=2", "train.log_interval=1",
    ]  # fmt: skip
    assert train.main(args) == 0
    metrics_text = (work_dir / "val_metrics.json").read_text()
    metrics = json.loads(metrics_text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert (
        metrics["iter"] == 2
        and metrics["protocol"] == "spnet rules, whole image, image at its own size, scales 1, no flip"
    )
    assert None in metrics["iou"]  # the synthetic world lacks 8 of the 19 classes: their IoU is undefined
    log = (work_dir / "train.log").read_text()
    assert "validation protocol (train.eval_protocol=whole): spnet rules, whole image" in log
    assert re.search(r"validation at iteration 2 .*\n\s*protocol: spnet rules, whole image", log)

    # --resume auto on the finished run: says so, changes nothing
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in work_dir.rglob("*")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args, "--resume", "auto"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "the run is complete (iteration 2 of 2; final mIoU" in result.stdout
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in work_dir.rglob("*")} == before

    # killed during the final validation (val_metrics.json of the last iteration never written): the
    # resumed run owes that validation and runs only it
    (work_dir / "val_metrics.json").unlink()
    assert train.main([*args, "--resume", "auto"]) == 0
    assert json.loads((work_dir / "val_metrics.json").read_text())["iter"] == 2
    assert (work_dir / "train.log").read_text().count("validation at iteration 2") == 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from models import build_model
    from utils.config import config_from_dict, config_to_dict

    full = config_to_dict(tiny_config())
    full["model"]["num_classes"] = 19
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    torch.save({"model": build_model(config_from_dict(full)).state_dict(), "config": full}, path)
    return path


TINY = ["model.backbone.stage_blocks=[1, 1, 2, 3]", "model.backbone.base_width=8", "model.backbone.depth=50"]
TINY += ["model.backbone.multi_grid=[1, 2, 4]", "train.num_workers=0"]


@pytest.mark.slow
def test_eval_creates_its_output_folder_and_writes_json_for_a_test_split(
    synthetic_cityscapes, checkpoint, tmp_path, capsys
):
    import eval as eval_script

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
    test_out = tmp_path / "other" / "test.json"
    assert eval_script.main([*base, "--split", "test", "--mode", "whole", "--out", str(test_out)]) == 0
    test = json.loads(test_out.read_text())
    assert test["scored"] is False and test["split"] == "test" and test["num_images"] == 2 and "miou" not in test


def test_eval_refuses_an_unwritable_output_before_evaluating(checkpoint, tmp_path):
    import eval as eval_script

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


def test_predict_mirrors_the_input_tree_and_refuses_to_overwrite_inputs(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from predict import output_paths

    images = [tmp_path / "in" / "a" / "x.png", tmp_path / "in" / "b" / "x.png"]
    pairs = output_paths(images, tmp_path / "in", tmp_path / "out")
    assert pairs == [
        (tmp_path / "out/a/x.png", tmp_path / "out/a/x_color.png"),
        (tmp_path / "out/b/x.png", tmp_path / "out/b/x_color.png"),
    ]
    assert output_paths([tmp_path / "p.jpg"], tmp_path / "p.jpg", tmp_path / "o") == [
        (tmp_path / "o/p.png", tmp_path / "o/p_color.png")
    ]
    with pytest.raises(ValueError, match="is the input folder"):
        output_paths(images, tmp_path / "in", tmp_path / "in")
    with pytest.raises(ValueError, match="is the input folder"):
        output_paths([tmp_path / "in" / "a" / "x.png"], tmp_path / "in" / "a" / "x.png", tmp_path / "in" / "a")
    nested = [tmp_path / "in" / "x.png", tmp_path / "in" / "sub" / "x.png"]  # in/x.png would go to in/sub/x.png
    with pytest.raises(ValueError, match=r"would overwrite input images \(e.g. .*in/sub/x.png\)"):
        output_paths(nested, tmp_path / "in", tmp_path / "in" / "sub")


@pytest.mark.slow
def test_readme_python_snippet_runs_as_a_script_outside_the_repository(tmp_path):
    """The README says to run it with the repository on PYTHONPATH; it does, from any folder."""
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    snippet = snippet.replace("spnet_r101.yaml", "spnet_r50.yaml").replace("769, 769", "65, 65")  # CPU-sized
    script = tmp_path / "my_script.py"
    script.write_text(snippet + "\nprint(tuple(logits.shape))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("(1, 19, 65, 65)")


def test_eval_help_explains_every_protocol_flag(capsys):
    import eval as eval_script

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


def test_predict_refuses_inputs_whose_outputs_share_a_name(tmp_path):
    """a.png and a.jpg would both write a.png; x_color.png's mask is x.png's overlay: one line, both inputs named."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from predict import output_paths

    same_stem = [tmp_path / "in" / "a.jpg", tmp_path / "in" / "a.png"]
    message = (
        f"--input: {same_stem[0]} and {same_stem[1]} would both write {tmp_path / 'out/a.png'}; rename one of them "
        "or predict them into separate --output folders"
    )
    with pytest.raises(ValueError) as err:
        output_paths(same_stem, tmp_path / "in", tmp_path / "out")
    assert str(err.value) == message
    overlay = [tmp_path / "in" / "x.png", tmp_path / "in" / "x_color.png"]
    with pytest.raises(ValueError, match=r"x.png and .*x_color.png would both write .*out/x_color.png"):
        output_paths(overlay, tmp_path / "in", tmp_path / "out")
    apart = [tmp_path / "in" / "a" / "x.png", tmp_path / "in" / "b" / "x.jpg", tmp_path / "in" / "x_colour.png"]
    assert len({p for pair in output_paths(apart, tmp_path / "in", tmp_path / "out") for p in pair}) == 6


def test_predict_checks_its_arguments_before_loading_the_model(tmp_path, capsys):
    """Each is one line; the checkpoint does not exist, so an error about it would mean the model was loaded."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import predict

    from utils.cli import run

    image = tmp_path / "x.png"
    image.write_bytes(b"")  # never read either
    blocker = tmp_path / "afile"
    blocker.write_text("a file")
    base = ["--config", str(ROOT / "configs/demo.yaml"), "--checkpoint", str(tmp_path / "none.pth")]
    base += ["--input", str(image), "--device", "cpu"]
    cases = [
        (["--output", str(blocker)], f"--output {blocker} is a file, not a folder; choose a folder"),
        (["--output", str(blocker / "sub")], f"--output: cannot write into {blocker / 'sub'} ("),
        (["--output", str(tmp_path / "o"), "--alpha", "3"], "--alpha 3: must be between 0 (the image only) and 1"),
        (["--output", str(tmp_path / "o"), "--device", "foo"], "--device foo: not a device predict.py runs on; use"),
        (["--output", str(tmp_path / "o"), "--stride", "0", "0"], "--stride: eval.stride[0] = 0 must be >= 1"),
    ]
    if not torch.cuda.is_available():
        cases += [
            (["--output", str(tmp_path / "o"), "--device", "cuda"], "--device cuda: torch sees no GPU"),
            (["--output", str(tmp_path / "o"), "eval.amp=fp16"], "eval.amp=fp16 needs a GPU; use eval.amp=bf16"),
        ]
    for args, message in cases:
        assert run(predict.main, [*base, *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, (args, err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_asking_for_a_missing_gpu_is_a_user_error_with_the_fix():
    from utils.distributed import init_distributed

    with pytest.raises(ValueError, match=r"^train.device=cuda, but torch sees no GPU .*use train.device=cpu"):
        init_distributed("cuda")
