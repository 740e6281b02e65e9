"""engine/segmenter.py and hubconf.py: a checkpoint alone predicts as eval.py does, from any folder, on any
input type, tiled or not; its overlay's legend lists the classes present."""

from __future__ import annotations

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
from conftest import ROOT, png_header, tiny_checkpoint
from datasets.base import DatasetError
from engine.segmenter import Segmenter, as_image
from utils.config import config_from_dict, save_config
from utils.protocol import Protocol
from utils.visualize import overlay_picture

PALETTE = [[200, 30, 10], [10, 200, 40], [30, 40, 220], [220, 200, 0], [150, 0, 200]]  # no greys: text is grey
CLASSES = ["road", "tree", "sky", "car", "sign"]


@pytest.fixture(scope="module")
def five_classes(tmp_path_factory):
    """A 5-class model whose checkpoint stores its class names and palette (as train.py's do)."""
    path, _ = tiny_checkpoint(tmp_path_factory.mktemp("five"), 5, classes=CLASSES, palette=PALETTE)
    return Segmenter.from_checkpoint(path, "cpu", verbose=False)


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour fields (a random model then predicts several classes in patches), uint8 (H, W, 3)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 5, generator=g)
    image = torch.nn.functional.interpolate(coarse, (height, width), mode="bilinear") * 255
    return image[0].permute(1, 2, 0).round().byte().numpy()


@pytest.mark.slow
def test_a_copied_checkpoint_predicts_as_eval_from_another_folder_and_through_torch_hub(synthetic_cityscapes, tmp_path):
    """The checkpoint copied elsewhere and used from a script run in a third folder: its stored config,
    classes and protocol alone give eval.py's saved predictions; torch.hub.load(source="local") the same."""
    original, full = tiny_checkpoint(tmp_path / "run")
    config = tmp_path / "run" / "config.yaml"
    save_config(config_from_dict(full), config)
    args = ["--config", str(config), "--checkpoint", str(original), f"data.root={synthetic_cityscapes}"]
    args += ["train.num_workers=0"]
    assert eval_script.main([*args, "--save-pred", str(tmp_path / "eval"), "--out", str(tmp_path / "m.json")]) == 0
    copied = tmp_path / "elsewhere" / "copy.pth"
    copied.parent.mkdir()
    shutil.copy(original, copied)
    images = sorted((synthetic_cityscapes / "leftImg8bit/val").glob("*/*.png"))
    script = tmp_path / "user" / "predict_mine.py"
    script.parent.mkdir()
    script.write_text(
        "import sys, numpy as np, torch\n"
        "from engine.segmenter import Segmenter\n"
        "segmenter = Segmenter.from_checkpoint(sys.argv[1], device='cpu')\n"
        f"hub = torch.hub.load({str(ROOT)!r}, 'spnet', source='local', checkpoint=sys.argv[1], device='cpu')\n"
        "for i, path in enumerate(sys.argv[2:]):\n"
        "    ids = segmenter(path)\n"
        "    assert torch.equal(hub(path), ids)\n"
        "    np.save(f'ids{i}.npy', ids.numpy())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script), str(copied), *map(str, images)], cwd=script.parent, env=env,
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    protocol = "spnet rules, sliding window 32x32 stride 22x22, image at its own size, scales 1, flip"
    assert done.stderr.count(f"{copied}: protocol {protocol}") == 2  # printed once by each
    for i, image in enumerate(images):
        name = image.stem.removesuffix("_leftImg8bit")
        expected = np.asarray(Image.open(tmp_path / "eval" / f"{name}.png"))
        assert np.array_equal(np.load(script.parent / f"ids{i}.npy"), expected), image


def test_every_input_type_gives_the_same_prediction(five_classes, tmp_path):
    photo = _photo(33, 47)
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    inputs = [path, str(path), Image.open(path), Image.fromarray(photo).convert("RGBA"), photo,
              torch.from_numpy(photo).permute(2, 0, 1)]  # fmt: skip
    ids = [five_classes(image) for image in inputs]
    assert ids[0].shape == (33, 47) and ids[0].dtype == torch.uint8 and len(ids[0].unique()) > 1
    assert all(torch.equal(i, ids[0]) for i in ids)
    probs = five_classes.probabilities(photo)
    assert probs.shape == (5, 33, 47) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(0), torch.ones(33, 47))
    assert torch.equal(probs.argmax(0).byte(), ids[0])
    for bad in (photo.astype(np.float32), torch.from_numpy(photo).float().permute(2, 0, 1), photo[..., 0]):
        with pytest.raises(ValueError, match=r"pass a path, a PIL image, an \(H, W, 3\) uint8 numpy array or a"):
            as_image(bad)


@pytest.mark.parametrize(
    "size", [(70, 45), pytest.param((97, 33), marks=pytest.mark.slow), pytest.param((50, 129), marks=pytest.mark.slow)]
)
def test_tiled_prediction_equals_the_whole_image(five_classes, size):
    """The real model, flip, odd sizes: class ids equal, probabilities equal (bands of windows, not tiles
    voting)."""
    photo = _photo(*size, seed=size[0])
    bands = list(five_classes.bands(photo, tile=True))
    (top, whole), *_ = five_classes.bands(photo, tile=False)
    tiled = torch.cat([scores for _, scores in bands], 1)
    assert len(bands) > 1 and top == 0 and tiled.shape == whole.shape == (5, *size)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=0)
    assert torch.equal(five_classes(photo, tile=True), whole.argmax(0).byte())


def test_auto_tiling_above_the_pixel_count_and_refusal_when_the_protocol_resizes(five_classes):
    assert not five_classes.tiled(2048, 2048) and five_classes.tiled(2048, 2049)
    protocol = Protocol(crop_size=(32, 32), scales=(1.0, 1.5), base_size=None)
    multi = Segmenter(five_classes.cfg, five_classes.report.source, device="cpu", protocol=protocol, tile_above=10)
    assert not multi.tiled(100, 100)  # automatic: the whole image, as before
    with pytest.raises(ValueError, match=re.escape("the protocol resizes it (at its own size, scales 1, 1.5); use")):
        multi.tiled(100, 100, tile=True)


def test_overlay_legend_lists_exactly_the_classes_present(five_classes):
    photo = _photo(40, 300)
    prediction = np.full((40, 300), 3, np.uint8)
    prediction[30:, 250:] = 1
    picture = overlay_picture(photo, prediction, PALETTE, CLASSES, alpha=0.25)
    naive = (0.75 * photo.astype(np.float64) + 0.25 * np.asarray(PALETTE, np.float64)[prediction]).round()
    assert np.array_equal(picture[:40], naive.astype(np.uint8))
    legend = picture[40:]
    shown = {tuple(c) for c in PALETTE if (legend == c).all(-1).sum() > 20}  # filled swatches
    assert shown == {tuple(PALETTE[1]), tuple(PALETTE[3])}
    photo = _photo(40, 90)
    ids = five_classes(photo)
    picture = five_classes.overlay(photo)
    shown = {k for k, c in enumerate(PALETTE) if (picture[40:] == c).all(-1).sum() > 20}
    assert shown == set(ids.unique().tolist()) and len(shown) > 1


def test_a_path_over_the_pixel_limit_is_named(five_classes, tmp_path):
    huge = tmp_path / "huge.png"
    png_header(huge, 20000, 20000)  # 60 bytes that say 400 million pixels
    with pytest.raises(DatasetError, match=re.escape(f"image {huge} is 20000x20000 = 400,000,000 pixels, over")) as err:
        five_classes(huge)
    assert str(err.value).endswith("if you trust the file, raise the limit: max_pixels=400000000")
