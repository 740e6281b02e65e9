"""utils/evaluation.py: evaluation over a loader shows its progress on a terminal, and stays quiet in logs;
its per-image counts are exact."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch
from torch import nn

from utils.evaluation import evaluate
from utils.metrics import ImageCounts


class _Constant(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": torch.zeros(x.shape[0], 3, *x.shape[-2:])}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _batches(n: int) -> list[dict[str, torch.Tensor]]:
    return [{"image": torch.zeros(1, 3, 8, 8), "mask": torch.zeros(1, 8, 8, dtype=torch.long)} for _ in range(n)]


def test_progress_bar_with_rate_and_time_left_on_a_terminal(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    matrix, _ = evaluate(_Constant(), _batches(3), 3, torch.device("cpu"), progress=True)
    bar = terminal.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert bar.startswith("evaluating: 100%") and "3/3 [" in bar and "<00:00" in bar and "img/s]" in bar
    assert matrix.matrix[0, 0] == 3 * 64  # the bar changed nothing


def test_no_progress_bar_in_logs_or_when_not_asked(monkeypatch):
    for stream, progress in ((io.StringIO(), True), (_Terminal(), False)):  # a log file; a rank other than 0
        monkeypatch.setattr(sys, "stderr", stream)
        evaluate(_Constant(), _batches(2), 3, torch.device("cpu"), progress=progress)
        assert stream.getvalue() == ""


def _naive_counts(prediction: np.ndarray, mask: np.ndarray, num_classes: int) -> np.ndarray:
    """(3, C): intersection, union, ground-truth pixels of one image, class by class."""
    valid = mask != 255
    rows = [[], [], []]
    for c in range(num_classes):
        truth, predicted = valid & (mask == c), valid & (prediction == c)
        rows[0].append(int((truth & predicted).sum()))
        rows[1].append(int((truth | predicted).sum()))
        rows[2].append(int(truth.sum()))
    return np.array(rows)


def test_per_image_counts_of_a_real_model_sum_to_the_confusion_matrix(synthetic_cityscapes):
    """A tiny SPNet on the synthetic Cityscapes images, fed in a shuffled order as a second process
    would see them: every image's counts equal a naive count of its prediction, the rows come back in
    dataset order, and their sums are the matrix's diagonal, row + column - diagonal and row sums."""
    from conftest import tiny_config
    from datasets import Cityscapes
    from datasets.cityscapes import CLASSES
    from datasets.transforms import eval_transforms
    from models import build_model
    from utils.config import ModelConfig

    cfg = tiny_config()
    model = build_model(ModelConfig(**{**vars(cfg.model), "num_classes": 19}), load_pretrained=False)
    dataset = Cityscapes(synthetic_cityscapes, "val", transforms=eval_transforms())
    order = [2, 0, 1]
    batches = [{k: v[None] if k != "name" else [v] for k, v in dataset[i].items()} for i in order]
    predictions = []
    counts = ImageCounts(19, indices=order)
    matrix, _ = evaluate(
        model, batches, 19, torch.device("cpu"), records=counts, on_prediction=lambda _, p: predictions.append(p)
    )
    records = counts.records(CLASSES, False, "spnet_whole_s1_noflip")
    assert records.names.tolist() == [dataset.name(i) for i in range(3)] and records.indices.tolist() == [0, 1, 2]
    for position, index in enumerate(order):
        naive = _naive_counts(predictions[position].numpy(), dataset.load_mask(index).numpy(), 19)
        assert np.array_equal(np.stack([records.intersection, records.union, records.gt_pixels])[:, index], naive)
    m = matrix.matrix.numpy()
    assert np.array_equal(records.intersection.sum(0), np.diag(m))
    assert np.array_equal(records.union.sum(0), m.sum(0) + m.sum(1) - np.diag(m))
    assert np.array_equal(records.gt_pixels.sum(0), m.sum(1))
    assert np.array_equal(records.confusion, m)  # the whole matrix too, for its picture
    assert len(set(torch.cat([p.flatten() for p in predictions]).tolist())) > 1  # not a one-class model
    assert records.miou() == pytest.approx(matrix.compute()["miou"], abs=1e-12)
    assert records.intersection.dtype == np.int64 and records.intersection.shape == (3, 19)
