"""Loss normalisation, OHEM, the confusion matrix and the LR schedule, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from utils.losses import SegmentationLoss
from utils.metrics import ConfusionMatrix
from utils.optim import build_optimizer, build_scheduler, lr_factor


def test_step_normalisation_makes_micro_batches_equal_one_batch():
    """Gradients of two micro-batches (different ignore counts) == gradient of the batch's mean CE."""
    torch.manual_seed(0)
    logits = torch.randn(4, 5, 6, 7, requires_grad=True)
    target = torch.randint(0, 5, (4, 6, 7))
    target[0, :3] = 255
    target[3] = 255
    reference = F.cross_entropy(logits, target, ignore_index=255)
    (expected,) = torch.autograd.grad(reference, logits)
    criterion = SegmentationLoss("ce", aux_weight=0.0)
    normalizer = float((target != 255).sum())
    total = sum(criterion({"out": logits[i : i + 2]}, target[i : i + 2], normalizer)[0] for i in (0, 2))
    (got,) = torch.autograd.grad(total, logits)
    torch.testing.assert_close(total, reference)
    torch.testing.assert_close(got, expected)


def test_aux_loss_weight():
    torch.manual_seed(0)
    out, aux = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    loss, parts = SegmentationLoss("ce", aux_weight=0.4)({"out": out, "aux": aux}, target, 32.0)
    torch.testing.assert_close(loss, F.cross_entropy(out, target) + 0.4 * F.cross_entropy(aux, target))
    torch.testing.assert_close(parts["aux"], F.cross_entropy(aux, target))


def test_ohem_keeps_the_hard_pixels():
    # 4 pixels; true-class probabilities 0.9, 0.6, 0.3, 0.1 (two classes, logits chosen accordingly)
    p = torch.tensor([0.9, 0.6, 0.3, 0.1])
    logits = torch.stack([torch.log(p), torch.log(1 - p)], dim=0).view(1, 2, 1, 4)
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    per_pixel = -torch.log(p)
    loss, _ = SegmentationLoss("ohem", ohem_thresh=0.7, ohem_min_kept=1, aux_weight=0)({"out": logits}, target, 4.0)
    torch.testing.assert_close(loss, per_pixel[1:].mean())  # p < 0.7: the last three
    loss, _ = SegmentationLoss("ohem", ohem_thresh=0.2, ohem_min_kept=3, aux_weight=0)({"out": logits}, target, 4.0)
    torch.testing.assert_close(loss, per_pixel[1:].mean())  # at least 3 kept: the 3 hardest


def _ohem_on_the_host(logits, target, thresh, min_kept, ignore_index=255):
    """OHEM as PyTorch-Encoding / MMSegmentation write it: count, index and threshold on the host."""
    valid = target != ignore_index
    prob = torch.softmax(logits, 1).gather(1, target.clamp(max=logits.shape[1] - 1).unsqueeze(1))[:, 0]
    threshold, num_valid = thresh, int(valid.sum())
    if 0 < min_kept <= num_valid:
        threshold = max(thresh, float(torch.kthvalue(prob[valid], min_kept).values))
    kept = valid & (prob <= threshold)
    per_pixel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    return per_pixel[kept].sum() / max(int(kept.sum()), 1) * num_valid


@pytest.mark.parametrize("min_kept", [0, 1, 50, 300, 470, 2000])  # 470: more than the labelled pixels
@pytest.mark.parametrize("thresh", [0.05, 0.3, 0.7])
def test_ohem_on_the_device_equals_the_host_formula(thresh, min_kept):
    """The device-side selection (no host read) keeps the same pixels as the host formula, with a
    third of the pixels ignored, for every case of min_kept against the labelled count."""
    gen = torch.Generator().manual_seed(min_kept)
    logits = torch.randn(2, 5, 12, 20, generator=gen) * 2
    target = torch.randint(0, 5, (2, 12, 20), generator=gen)
    target[torch.rand(target.shape, generator=gen) < 0.33] = 255
    assert (target != 255).sum() < 470 < target.numel()
    loss, _ = SegmentationLoss("ohem", ohem_thresh=thresh, ohem_min_kept=min_kept, aux_weight=0)(
        {"out": logits}, target, 1.0
    )
    torch.testing.assert_close(loss, _ohem_on_the_host(logits, target, thresh, min_kept))


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


def test_lr_factor_formula_at_chosen_iterations():
    kw = dict(max_iters=1000, power=0.9, warmup_iters=100, warmup_ratio=0.1)
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(50, **kw) == pytest.approx((0.1 + 0.9 * 0.5) * (1 - 0.05) ** 0.9)
    assert lr_factor(100, **kw) == pytest.approx((1 - 0.1) ** 0.9)
    assert lr_factor(500, **kw) == pytest.approx(0.5**0.9)
    assert lr_factor(999, **kw) == pytest.approx(0.001**0.9)
    assert lr_factor(1000, **kw) == 0.0


def test_scheduler_and_head_lr_multiplier():
    from conftest import tiny_config
    from models import build_model
    from utils.config import OptimConfig

    model = build_model(tiny_config())
    cfg = OptimConfig(lr=0.01, head_lr_mult=10, warmup_iters=10, warmup_ratio=0.1)
    optimizer = build_optimizer(model, cfg)
    assert [g["name"] for g in optimizer.param_groups] == ["backbone", "heads"]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    scheduler = build_scheduler(optimizer, cfg, max_iters=100)
    for iteration in range(60):
        factor = lr_factor(iteration, max_iters=100, power=0.9, warmup_iters=10, warmup_ratio=0.1)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * factor)
        assert optimizer.param_groups[1]["lr"] == pytest.approx(0.1 * factor)
        optimizer.step()
        scheduler.step()
