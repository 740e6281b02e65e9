"""Analysis plots drawn with matplotlib: training curves of several runs, per-class IoU side by side.

matplotlib is optional (``pip install matplotlib``; the test requirements bring it): training and
evaluation never need it, only ``scripts/plot.py``. The confusion matrix is drawn with Pillow
(``utils.visualize.confusion_picture``) because TensorBoard shows it at every validation.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CURVES = {  # TensorBoard tag -> the plot's title; train.py writes these
    "train/loss": "training loss",
    "train/lr": "learning rate",
    "val/miou": "validation mIoU",
}


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend, or one error line saying what to install."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("plots need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_curves(work_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of ``CURVES`` that a run's TensorBoard folder holds: tag -> [(iteration, value)].

    A resumed run logs again the iterations after its checkpoint; the newest value of an iteration
    wins, so the curve is the one the finished run trained.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = Path(work_dir) / "tb"
    if not any(folder.glob("events.out.tfevents.*")):
        raise FileNotFoundError(f"{work_dir}: no TensorBoard events in {folder}; pass a train.py work dir")
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    tags = set(events.Tags()["scalars"])
    curves = {}
    for tag in CURVES:
        if tag in tags:
            newest = {e.step: e.value for e in sorted(events.Scalars(tag), key=lambda e: e.wall_time)}
            curves[tag] = sorted(newest.items())
    return curves


def training_curves(runs: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]]) -> np.ndarray:
    """Loss, learning rate and validation mIoU against the iteration, one panel each, runs overlaid."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 3.6), layout="constrained")
    for axis, (tag, title) in zip(axes, CURVES.items()):
        for label, curves in runs.items():
            points = curves.get(tag, [])
            if points:
                steps, values = zip(*points)
                scale = 100 if tag == "val/miou" else 1
                axis.plot(steps, [scale * v for v in values], marker="o" if len(points) < 20 else None, label=label)
        axis.set_title(title + (" (%)" if tag == "val/miou" else ""))
        axis.set_xlabel("iteration")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    return _pixels(plt, figure)


def class_iou_bars(
    class_names: Sequence[str],
    runs: Mapping[str, Sequence[float | None]],
    intervals: Mapping[str, Sequence[tuple[float, float] | None]] | None = None,
    title: str = "",
) -> np.ndarray:
    """Per-class IoU (%) of several runs as grouped bars, with their confidence intervals when given.

    A class a run has no IoU for (None or NaN: absent from its ground truth and predictions) has no bar.
    """
    plt = pyplot()
    width = 0.8 / max(len(runs), 1)
    inches = max(6.0, 0.45 * len(class_names) * max(len(runs), 2))
    figure, axis = plt.subplots(figsize=(inches, 4), layout="constrained")
    for k, (label, ious) in enumerate(runs.items()):
        x = np.arange(len(class_names)) + (k - (len(runs) - 1) / 2) * width
        values = np.array([np.nan if v is None else 100 * v for v in ious], dtype=np.float64)
        errors = None
        if intervals is not None and label in intervals:
            low_high = [(math.nan, math.nan) if ci is None else ci for ci in intervals[label]]
            low, high = (100 * np.array([c[i] for c in low_high], dtype=np.float64) for i in (0, 1))
            errors = np.nan_to_num(np.stack([values - low, high - values]), nan=0.0).clip(min=0)
        axis.bar(x, np.nan_to_num(values), width, yerr=errors, capsize=2, label=label)
    axis.set_xticks(np.arange(len(class_names)), class_names, rotation=60, ha="right", fontsize="small")
    axis.set_ylabel("IoU (%)")
    axis.set_ylim(0, 100)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize="small")
    if title:
        axis.set_title(title)
    return _pixels(plt, figure)


def _pixels(plt: Any, figure: Any) -> np.ndarray:
    """The figure as (H, W, 3) uint8, so it is saved as every other picture of the project is."""
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))
