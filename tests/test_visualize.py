"""Validation picture: column titles above the rows, a colour legend of the classes shown below them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.visualize import colorize, denormalize, legend_classes, prediction_panel

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
NAMES = ("road", "car", "sky", "tree", "person", "sign")
PALETTE = ((200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (200, 30, 200), (30, 200, 200))


def _samples(n: int, h: int, w: int) -> list[dict[str, torch.Tensor]]:
    """Sample k shows classes {k, k + 1} in its truth and {k + 1} in its prediction; the truth's last row is ignore."""
    samples = []
    for k in range(n):
        mask = torch.full((h, w), k)
        mask[:, w // 2 :] = k + 1
        mask[-1] = 255
        samples.append({"image": torch.randn(3, h, w), "mask": mask, "prediction": torch.full((h, w), k + 1)})
    return samples


def _rows(samples: list[dict[str, torch.Tensor]]) -> np.ndarray:
    return np.concatenate(
        [
            np.concatenate(
                [denormalize(s["image"], MEAN, STD), colorize(s["mask"], PALETTE), colorize(s["prediction"], PALETTE)],
                axis=1,
            )
            for s in samples
        ]
    )


def _has(band: np.ndarray, colour: tuple[int, int, int]) -> bool:
    """Whether ``band`` has a 3x3 block of ``colour``: a swatch, not a pixel of anti-aliased text."""
    m = (band == np.asarray(colour, np.uint8)).all(-1)
    h, w = m.shape
    return bool(np.logical_and.reduce([m[i : h - 2 + i, j : w - 2 + j] for i in range(3) for j in range(3)]).any())


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("size", [(33, 47), (256, 512), (9, 5)])  # (9, 5): images narrower than the titles
def test_panel_layout(n, size):
    h, w = size
    samples = _samples(n, h, w)
    rows = _rows(samples)
    plain = prediction_panel(samples, PALETTE, MEAN, STD)
    title = plain.shape[0] - n * h  # without class_names: title band + rows, no legend
    assert plain.dtype == np.uint8 and plain.shape[1:] == (3 * w, 3) and 0 < title < 40
    np.testing.assert_array_equal(plain[title:], rows)  # the rows are unchanged, pixel for pixel, below the titles

    band = plain[:title].astype(int)
    assert (band[0] == 255).all(), "white background above the titles"
    dark = (band < 100).all(-1)
    if w >= 32:  # a narrower column shows only a clipped piece of its title
        for i in range(3):
            assert dark[:, i * w : (i + 1) * w].any(), f"no title text over column {i}"

    panel = prediction_panel(samples, PALETTE, MEAN, STD, class_names=NAMES)
    assert panel.shape[0] > plain.shape[0] and panel.shape[1:] == plain.shape[1:]
    np.testing.assert_array_equal(panel[: plain.shape[0]], plain)  # the legend only adds a band below

    titled = prediction_panel(samples, PALETTE, MEAN, STD, None, "work_dirs/demo, iteration 200 of 200: mIoU 58.30%")
    caption = titled.shape[0] - plain.shape[0]  # the title adds a band above, the rest stays as it was
    assert 0 < caption < 40 and titled.shape[1:] == plain.shape[1:]
    np.testing.assert_array_equal(titled[caption:], plain)
    assert (titled[:caption].astype(int) < 100).all(-1).any(), "no title text"


def test_legend_classes_order_and_ignore():
    def sample(truth, prediction):
        return {"mask": torch.tensor([truth]), "prediction": torch.tensor([prediction])}

    samples = [sample([3, 255, 1], [1, 5]), sample([3, 3, 9], [0, 0, 255])]  # 9 is not a class of 6
    assert legend_classes(samples, num_classes=6) == [0, 1, 3, 5, 255]
    # ignore is listed for the ground truth only: a prediction of 255 is not a class
    assert legend_classes([sample([2, 2], [255, 4])], num_classes=6) == [2, 4]


def test_legend_swatches():
    samples = _samples(2, 33, 47)  # classes 0, 1, 2 and ignore shown; 3, 4, 5 not
    assert legend_classes(samples, len(NAMES)) == [0, 1, 2, 255]
    plain = prediction_panel(samples, PALETTE, MEAN, STD)
    legend = prediction_panel(samples, PALETTE, MEAN, STD, class_names=NAMES)[plain.shape[0] :]
    for k in range(3):
        assert _has(legend, PALETTE[k]), f"no swatch for {NAMES[k]}"
    for k in range(3, 6):
        assert not _has(legend, PALETTE[k]), f"swatch for absent class {NAMES[k]}"
    assert _has(legend, (0, 0, 0))  # ignore is drawn black


@pytest.mark.parametrize(("width", "one_line"), [(512, True), (16, False)])
def test_legend_wraps_to_panel_width(width, one_line):
    mask = torch.arange(6).repeat_interleave(-(-width // 6))[:width].repeat(8, 1)  # all six classes
    samples = [{"image": torch.zeros(3, 8, width), "mask": mask, "prediction": mask}]
    plain = prediction_panel(samples, PALETTE, MEAN, STD)
    legend = prediction_panel(samples, PALETTE, MEAN, STD, class_names=NAMES)[plain.shape[0] :]
    tops = set()
    for colour in PALETTE:
        ys, xs = (legend == np.asarray(colour, np.uint8)).all(-1).nonzero()
        assert xs.size and xs.max() < 3 * width - 1, f"swatch {colour} missing or cut off"
        tops.add(ys.min())
    assert (len(tops) == 1) == one_line


def test_old_pillow_font_without_size(monkeypatch):
    from PIL import ImageFont

    # Pillow < 10.1: load_default() takes no size and returns the fixed-size bitmap font.
    monkeypatch.setattr(ImageFont, "load_default", ImageFont.load_default_imagefont)
    samples = _samples(3, 33, 47)
    plain = prediction_panel(samples, PALETTE, MEAN, STD)
    panel = prediction_panel(samples, PALETTE, MEAN, STD, class_names=NAMES)
    np.testing.assert_array_equal(plain[-3 * 33 :], _rows(samples))
    assert all(_has(panel[plain.shape[0] :], PALETTE[k]) for k in range(4))


def test_confusion_picture_colours_each_row_by_where_its_pixels_went():
    """Rows are ground truth normalised to 100%: white (0%) to dark blue (100%); a class without pixels is grey."""
    from utils.visualize import confusion_picture

    matrix = np.array([[5, 5, 0], [0, 10, 0], [0, 0, 0]])  # "a": half right; "b": all right; "c": no pixels
    picture = confusion_picture(matrix, ["a", "b", "c"], title="run, iteration 7", cell=10)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    low, high = np.array([255.0, 255.0, 255.0]), np.array([8.0, 48.0, 107.0])

    def count(colour):
        return int(np.all(picture == np.asarray(colour, np.uint8), axis=2).sum())

    half, full = (low + 0.5 * (high - low)).round(), high
    assert count(half) == 2 * 10 * 10  # (a, a) and (a, b)
    assert count(full) == 10 * 10  # (b, b)
    assert count((200, 200, 200)) >= 3 * 10 * 10  # the row of c
    with pytest.raises(ValueError, match=r"a confusion matrix of 3 classes is \(3, 3\), got \(2, 2\)"):
        confusion_picture(np.zeros((2, 2)), ["a", "b", "c"])


def test_confusion_picture_of_many_classes_stays_readable():
    """150 classes (ADE20K) get small cells without numbers; 19 (Cityscapes) large ones with them."""
    from utils.visualize import confusion_picture

    names = [f"class {i}" for i in range(150)]
    big = confusion_picture(np.eye(150, dtype=np.int64), names)
    assert 150 * 6 <= big.shape[1] <= 150 * 6 + 200
    small = confusion_picture(np.eye(19, dtype=np.int64), names[:19])
    assert small.shape[1] >= 19 * 36
