"""utils/losses.py: cross-entropy normalised over the global batch, the aux weight, and OHEM against its formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from utils.losses import SegmentationLoss


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
