"""scripts/predict.py: where its outputs go, and the arguments it checks before loading a model."""

from __future__ import annotations

import numpy as np
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
        (["--output", str(tmp_path / "o"), "--tile-above", "0"], "--tile-above 0: must be at least 1 (pixels)"),
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


COLOURS = [[20, 90, 200], [200, 40, 40], [30, 180, 60], [240, 240, 30], [90, 90, 90]]


@pytest.fixture(scope="module")
def predict_run(tmp_path_factory):
    """predict.py on two photos (one odd-sized) with --save-probs, tiled and not; returns (folder, photos, runs)."""
    from PIL import Image

    from conftest import tiny_checkpoint
    from utils.config import config_from_dict, save_config
    from utils.visualize import colorize

    folder = tmp_path_factory.mktemp("predict")
    checkpoint, full = tiny_checkpoint(folder / "run", 5)
    save_config(config_from_dict(full), folder / "config.yaml")
    photos = folder / "photos"
    photos.mkdir()
    for name, (h, w) in {"a": (70, 45), "b": (40, 64)}.items():  # colour fields: several classes predicted
        blocks = np.random.default_rng(h).integers(0, 5, (h // 10 + 1, w // 10 + 1))
        field = blocks.repeat(10, 0).repeat(10, 1)[:h, :w]
        Image.fromarray(colorize(field, COLOURS)).save(photos / f"{name}.png")
    base = ["--config", str(folder / "config.yaml"), "--checkpoint", str(checkpoint), "--input", str(photos)]
    for mode in ("--tile", "--no-tile"):
        assert predict.main([*base, "--output", str(folder / mode), mode, "--save-probs", "--device", "cpu"]) == 0
    return folder, photos


@pytest.mark.slow
def test_save_probs_round_trip_and_tiled_equals_whole(predict_run):
    """The .npy reads back as float16 (C, H, W) summing to 1; the mask's class has the largest stored
    probability (float16 may tie two close ones); tiled and whole runs write the same masks and overlays."""
    from PIL import Image

    folder, photos = predict_run
    for name in ("a", "b"):
        size = np.asarray(Image.open(photos / f"{name}.png")).shape[:2]
        ids = np.asarray(Image.open(folder / "--tile" / f"{name}.png"))
        probs = np.load(folder / "--tile" / f"{name}_probs.npy")
        assert probs.dtype == np.float16 and probs.shape == (5, *size) and ids.shape == size
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1, atol=5e-3)
        assert (np.take_along_axis(probs, ids[None].astype(np.int64), 0)[0] == probs.max(0)).all()
        assert len(np.unique(ids)) > 1
        whole = np.load(folder / "--no-tile" / f"{name}_probs.npy")
        np.testing.assert_allclose(probs.astype(np.float32), whole.astype(np.float32), atol=1e-3)
        for file in (f"{name}.png", f"{name}_color.png"):
            tiled, untiled = (np.asarray(Image.open(folder / mode / file)) for mode in ("--tile", "--no-tile"))
            assert np.array_equal(tiled, untiled), file


@pytest.mark.slow
def test_tile_that_the_protocol_cannot_stream_is_one_line(predict_run, capsys):
    from utils.cli import run

    folder, photos = predict_run
    args = ["--config", str(folder / "config.yaml"), "--checkpoint", str(folder / "run/model.pth"), "--device", "cpu"]
    args += ["--input", str(photos / "a.png"), "--output", str(folder / "o"), "--tile", "--scales", "1", "1.5"]
    assert run(predict.main, args) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: --tile: {photos / 'a.png'}: tiled inference runs on the image at its own size (70x45); the protocol "
        "resizes it (at its own size, scales 1, 1.5); use one scale, --scales 1, and the image's own size "
        "(eval.base_size=null, eval.resize_to=null)\n"
    )
