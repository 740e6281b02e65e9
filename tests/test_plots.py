"""utils/plots.py and scripts/plot.py: the curves of runs, per-class bars, the confusion matrix."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from conftest import ROOT
from utils.plots import read_curves, training_curves

sys.path.insert(0, str(ROOT / "scripts"))


def _write_run(work_dir, points, tag="train/loss", wall_start=1000.0):
    writer = SummaryWriter(work_dir / "tb")
    for k, (step, value) in enumerate(points):
        writer.add_scalar(tag, value, step, walltime=wall_start + k)
    writer.close()


def test_a_resumed_run_reads_as_the_curve_it_trained(tmp_path):
    """Iterations logged again after a resume: the newest value of each wins; other tags are kept apart."""
    run = tmp_path / "run"
    _write_run(run, [(1, 3.0), (2, 2.5), (3, 2.0), (4, 1.9)])
    time.sleep(1.1)  # a second events file (the resumed process), written later
    _write_run(run, [(3, 2.1), (4, 1.8), (5, 1.6)], wall_start=2000.0)
    _write_run(run, [(5, 0.25)], tag="val/miou", wall_start=3000.0)
    curves = read_curves(run)
    steps, values = zip(*curves["train/loss"])
    assert steps == (1, 2, 3, 4, 5) and values == pytest.approx([3.0, 2.5, 2.1, 1.8, 1.6])  # float32 in the events
    assert curves["val/miou"] == [(5, 0.25)] and "train/lr" not in curves


def test_curves_of_two_runs_are_drawn_and_a_folder_without_events_is_one_error_line(tmp_path):
    for name, scale in (("a", 1.0), ("b", 0.5)):
        _write_run(tmp_path / name, [(i, scale * (3 - 0.1 * i)) for i in range(1, 11)])
    picture = training_curves({name: read_curves(tmp_path / name) for name in "ab"})
    assert picture.dtype == np.uint8 and picture.shape == (360, 1500, 3)  # 15 x 3.6 inches at 100 dpi
    out = tmp_path / "curves.png"
    result = subprocess.run(
        [sys.executable, "scripts/plot.py", "curves", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert np.asarray(Image.open(out).convert("RGB")).shape == picture.shape
    result = subprocess.run(
        [sys.executable, "scripts/plot.py", "curves", str(tmp_path), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {tmp_path}: no TensorBoard events in {tmp_path / 'tb'}")


def test_without_matplotlib_plots_say_what_to_install(monkeypatch):
    from utils import plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    with pytest.raises(ValueError, match=r"plots need matplotlib: pip install matplotlib"):
        plots.pyplot()


def _records(tmp_path, name, seed, confusion=True):
    from utils.records import Records, save_records

    rng = np.random.default_rng(seed)
    gt = rng.integers(50, 400, size=(6, 3))
    intersection = (gt * rng.uniform(0.3, 0.9, size=(6, 3))).astype(np.int64)
    matrix = rng.integers(0, 500, size=(3, 3)) if confusion else None
    records = Records(
        names=np.array([f"img{i}" for i in range(6)]), indices=np.arange(6), intersection=intersection,
        union=gt + 20, gt_pixels=gt, classes=("road", "car", "sky"), over_all_classes=False,
        protocol="spnet_whole_s1_flip", confusion=matrix,
    )  # fmt: skip
    return save_records(tmp_path / f"{name}.records.npz", records), matrix


def test_the_confusion_matrix_of_an_evaluation_is_the_one_its_records_hold(tmp_path, capsys):
    import plot

    from utils.visualize import confusion_picture

    path, matrix = _records(tmp_path, "eval_val_x", 0)
    (tmp_path / "eval_val_x.json").write_text("{}")
    out = tmp_path / "confusion.png"
    assert plot.main(["confusion", str(tmp_path / "eval_val_x.json"), "--out", str(out)]) == 0
    expected = confusion_picture(matrix, ("road", "car", "sky"), "eval_val_x: 6 images")
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), expected)
    second, other = _records(tmp_path, "eval_val_y", 1)  # seeds of one row, joined by a comma: their sum
    assert plot.main(["confusion", f"{path},{second}", "--out", str(out)]) == 0
    expected = confusion_picture(matrix + other, ("road", "car", "sky"), "eval_val_x: 6 images, 2 runs summed")
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), expected)
    old, _ = _records(tmp_path, "old", 0, confusion=False)
    with pytest.raises(ValueError, match=r"old.records.npz: records without the confusion matrix"):
        plot.main(["confusion", str(old), "--out", str(out)])


def test_class_bars_of_two_runs_with_their_intervals(tmp_path):
    import plot

    a, _ = _records(tmp_path, "a", 1)
    b, _ = _records(tmp_path, "b", 2)
    out = tmp_path / "classes.png"
    args = ["classes", str(a), str(b), "--labels", "FCN", "SPNet", "--samples", "200", "--out", str(out)]
    assert plot.main(args) == 0
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape == (400, 600, 3)  # 6 x 4 inches at 100 dpi: the width of 3 classes x 2 runs floors at 6
    with pytest.raises(SystemExit):
        plot.parse_args(["classes", str(a), str(b), "--labels", "FCN", "--out", str(out)])
