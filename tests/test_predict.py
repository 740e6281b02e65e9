"""scripts/predict.py: where its outputs go, and the arguments it checks before loading a model."""

from __future__ import annotations

import predict
import pytest
import torch
from predict import output_paths

from conftest import ROOT


def test_predict_mirrors_the_input_tree_and_refuses_to_overwrite_inputs(tmp_path):
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


def test_predict_refuses_inputs_whose_outputs_share_a_name(tmp_path):
    """a.png and a.jpg would both write a.png; x_color.png's mask is x.png's overlay: one line, both inputs named."""
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
