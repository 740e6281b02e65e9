"""utils/metrics.py: the confusion matrix and the mIoU conventions, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from utils.metrics import ConfusionMatrix


def test_confusion_matrix_by_hand():
    # 3 classes; class 2 never appears in the ground truth nor the prediction; one ignored pixel.
    target = torch.tensor([0, 0, 0, 1, 1, 255, 1])
    prediction = torch.tensor([0, 0, 1, 1, 0, 2, 1])
    cm = ConfusionMatrix(3)
    cm.update(prediction, target)
    assert cm.matrix.tolist() == [[2, 1, 0], [1, 2, 0], [0, 0, 0]]
    m = cm.compute()
    assert m["iou"][:2] == [2 / 4, 2 / 4] and math.isnan(m["iou"][2])
    assert m["miou"] == 0.5  # the absent class is left out (Cityscapes evaluator convention)
    assert m["miou_other_conventions"]["all_classes_absent_as_0"] == pytest.approx(1 / 3)  # semseg / PyTorch-Encoding
    assert m["miou_definition"].startswith("mean IoU over the 2 of 3 classes present")
    over_all = cm.compute(over_all_classes=True)  # ADE20K's devkit: the absent class counts 0 in the headline
    assert over_all["miou"] == pytest.approx(1 / 3) and over_all["miou_other_conventions"]["present_classes"] == 0.5
    assert m["pixel_accuracy"] == 4 / 6 and m["mean_accuracy"] == pytest.approx((2 / 3 + 2 / 3) / 2)
