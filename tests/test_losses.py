"""utils/losses.py: cross-entropy normalised over the global batch, the aux weight, OHEM, and the focal, Dice and
Lovász terms with class weights, each against a naive reference written here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from utils.config import LossConfig
from utils.losses import LossTerm, SegmentationLoss, build_criterion, parse_terms


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


# --- the terms against plain per-pixel loops ------------------------------------------------------


def _example(seed=0, num_classes=4, shape=(2, 5, 6)):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape[0], num_classes, *shape[1:], generator=gen) * 2
    target = torch.randint(0, num_classes, shape, generator=gen)
    target[torch.rand(shape, generator=gen) < 0.25] = 255
    target[0, 0, 0] = 255
    return logits, target


def _pixels(logits, target):
    """(probabilities of the classes, label) of every labelled pixel, in Python floats."""
    prob = torch.softmax(logits.double(), 1)
    out = []
    for b in range(target.shape[0]):
        for i in range(target.shape[1]):
            for j in range(target.shape[2]):
                if int(target[b, i, j]) != 255:
                    out.append(([float(p) for p in prob[b, :, i, j]], int(target[b, i, j])))
    return out


def _ref_focal(logits, target, gamma, weight, normalizer):
    w = weight or [1.0] * logits.shape[1]
    return sum(-w[y] * (1 - p[y]) ** gamma * math.log(p[y]) for p, y in _pixels(logits, target)) / normalizer


def _ref_dice(logits, target, smooth, weight):
    pixels, num_classes = _pixels(logits, target), logits.shape[1]
    w = weight or [1.0] * num_classes
    losses = []
    for c in range(num_classes):
        inter = sum(p[c] for p, y in pixels if y == c)
        ground = sum(1 for _, y in pixels if y == c)
        predicted = sum(p[c] for p, _ in pixels)
        losses.append(1 - (2 * inter + smooth) / (predicted + ground + smooth))
    return sum(wc * lc for wc, lc in zip(w, losses)) / sum(w)


def _jaccard_loss(mistakes, ground):
    """Delta_J(M) = |M| / |G u M| (Berman et al., eq. 4, as a set function of the mispredicted pixels)."""
    union = ground | mistakes
    return len(mistakes) / len(union) if union else 0.0


def _ref_lovasz(logits, target, weight):
    """The Lovász extension by its definition: sort the errors, sum e_(k) (Delta(M_k) - Delta(M_k-1))."""
    pixels, num_classes = _pixels(logits, target), logits.shape[1]
    w = weight or [1.0] * num_classes
    total, weights = 0.0, 0.0
    for c in range(num_classes):
        ground = {i for i, (_, y) in enumerate(pixels) if y == c}
        if not ground:
            continue  # classes='present'
        errors = [abs((1.0 if y == c else 0.0) - p[c]) for p, y in pixels]
        order = sorted(range(len(pixels)), key=lambda i: -errors[i])
        loss, previous = 0.0, 0.0
        for k in range(1, len(order) + 1):
            now = _jaccard_loss(set(order[:k]), ground)
            loss += errors[order[k - 1]] * (now - previous)
            previous = now
        total, weights = total + w[c] * loss, weights + w[c]
    return total / weights


def _one(name, weight=None, **options):
    return SegmentationLoss(terms=parse_terms([{"name": name, **options}]), aux_weight=0, class_weight=weight)


@pytest.mark.parametrize("weight", [None, [0.5, 2.0, 1.0, 3.0]])
def test_cross_entropy_with_class_weights_is_the_weighted_sum_over_the_step_pixels(weight):
    logits, target = _example()
    w = weight or [1.0] * 4
    expected = sum(-w[y] * math.log(p[y]) for p, y in _pixels(logits, target)) / 50.0
    loss, _ = _one("ce", weight)({"out": logits}, target, 50.0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("weight", [None, [0.5, 2.0, 1.0, 3.0]])
@pytest.mark.parametrize("gamma", [0.0, 2.0, 0.5])
def test_focal_equals_its_formula_per_pixel(gamma, weight):
    logits, target = _example(seed=1)
    loss, _ = _one("focal", weight, gamma=gamma)({"out": logits}, target, 37.0)
    assert loss.item() == pytest.approx(_ref_focal(logits, target, gamma, weight, 37.0), rel=1e-5)


def test_focal_with_gamma_0_is_cross_entropy():
    logits, target = _example(seed=2)
    torch.testing.assert_close(
        _one("focal", gamma=0.0)({"out": logits}, target, 9.0)[0], _one("ce")({"out": logits}, target, 9.0)[0]
    )


@pytest.mark.parametrize("weight", [None, [0.5, 2.0, 1.0, 3.0]])
@pytest.mark.parametrize("smooth", [1.0, 0.0])
def test_dice_equals_its_formula_and_skips_ignored_pixels(smooth, weight):
    logits, target = _example(seed=3)
    labelled = float((target != 255).sum())
    loss, _ = _one("dice", weight, smooth=smooth)({"out": logits}, target, labelled)  # one micro-batch: its share is 1
    assert loss.item() == pytest.approx(_ref_dice(logits, target, smooth, weight), rel=1e-5)


@pytest.mark.parametrize("weight", [None, [0.5, 2.0, 1.0, 3.0]])
@pytest.mark.parametrize("seed", [4, 5])
def test_lovasz_equals_the_extension_by_sorted_errors(seed, weight):
    logits, target = _example(seed=seed, num_classes=5)  # class 4 may be absent: only present classes count
    target[target == 4] = 3
    weight = weight and weight + [7.0]
    labelled = float((target != 255).sum())
    loss, _ = _one("lovasz", weight)({"out": logits}, target, labelled)
    assert loss.item() == pytest.approx(_ref_lovasz(logits, target, weight), rel=1e-5)


def test_lovasz_of_a_perfect_prediction_is_zero_and_of_all_ignored_is_zero():
    target = torch.tensor([[[0, 1], [2, 255]]])
    logits = F.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 50
    assert _one("lovasz")({"out": logits}, target, 3.0)[0].item() == pytest.approx(0.0, abs=1e-6)
    assert _one("lovasz")({"out": logits}, torch.full_like(target, 255), 1.0)[0].item() == 0.0


def test_set_losses_are_weighted_by_the_micro_batch_share_of_the_step():
    """Two micro-batches of a step: each one's Dice counts by its share of the step's labelled pixels."""
    logits, target = _example(seed=6)
    criterion, total = _one("dice"), float((target != 255).sum())
    halves = [criterion({"out": logits[i : i + 1]}, target[i : i + 1], total)[0] for i in (0, 1)]
    shares = [float((target[i] != 255).sum()) / total for i in (0, 1)]
    alone = [
        criterion({"out": logits[i : i + 1]}, target[i : i + 1], float((target[i] != 255).sum()))[0] for i in (0, 1)
    ]
    torch.testing.assert_close(halves[0] + halves[1], shares[0] * alone[0] + shares[1] * alone[1])


def test_a_combination_equals_the_weighted_sum_of_its_terms():
    logits, target = _example(seed=7)
    aux = torch.randn_like(logits)
    terms = [{"name": "ce", "weight": 1.0}, {"name": "dice", "weight": 0.5}, {"name": "focal", "weight": 0.3},
             {"name": "lovasz", "weight": 2.0}]  # fmt: skip
    weight = [1.0, 2.0, 0.5, 1.5]
    combined = SegmentationLoss(terms=parse_terms(terms), aux_weight=0.2, class_weight=weight)
    loss, parts = combined({"out": logits, "aux": aux}, target, 40.0)
    main = sum(t["weight"] * _one(t["name"], weight)({"out": logits}, target, 40.0)[0] for t in terms)
    aux_loss = sum(t["weight"] * _one(t["name"], weight)({"out": aux}, target, 40.0)[0] for t in terms)
    torch.testing.assert_close(parts["main"], main)
    torch.testing.assert_close(parts["aux"], aux_loss)  # the aux output takes the same sum ...
    torch.testing.assert_close(loss, main + 0.2 * aux_loss)  # ... times aux_weight


def test_the_aux_output_takes_plain_ce_where_the_main_takes_ohem():
    logits, target = _example(seed=8)
    aux = torch.randn_like(logits)
    criterion = SegmentationLoss(terms=[LossTerm("ohem")], aux_weight=0.4, ohem_min_kept=5)
    _, parts = criterion({"out": logits, "aux": aux}, target, 30.0)
    torch.testing.assert_close(parts["aux"], _one("ce")({"out": aux}, target, 30.0)[0])


def test_todays_configs_build_todays_loss():
    """A config without terms: ``loss.type`` alone, as before (same numbers)."""
    logits, target = _example(seed=9)
    aux = torch.randn_like(logits)
    built = build_criterion(LossConfig(type="ce", aux_weight=0.4), 4)
    expected = F.cross_entropy(logits, target, ignore_index=255) + 0.4 * F.cross_entropy(aux, target, ignore_index=255)
    torch.testing.assert_close(built({"out": logits, "aux": aux}, target, float((target != 255).sum()))[0], expected)


def test_class_weights_of_the_wrong_length_are_refused():
    with pytest.raises(ValueError, match=r"loss.class_weight has 3 weights but the model has 4 classes"):
        build_criterion(LossConfig(class_weight=(1.0, 2.0, 3.0)), 4, [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "terms, message",
    [
        ([{"name": "dise"}], r"loss.terms\[0\].name = 'dise' is not a loss"),
        ([{"name": "focal", "gama": 2}], r"focal has no option gama"),
        ([{"name": "ce", "weight": -1}], r"loss.terms\[0\].weight = -1 must be a number >= 0"),
        ([], r"loss.terms is empty"),
    ],
)
def test_bad_terms_name_the_entry(terms, message):
    with pytest.raises(ValueError, match=message):
        parse_terms(terms)


@pytest.mark.parametrize("name", ["ce", "ohem", "focal", "dice", "lovasz"])
def test_each_loss_trains_a_tiny_model(name):
    """A 1x1-conv model on a fixed batch: 30 SGD steps lower the loss (with the aux output at 0.2)."""
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 8, 8, generator=gen)
    target = (image[:, 0] > 0).long() + (image[:, 1] > 0).long()  # 3 classes, learnable from the pixel
    target[:, :2] = 255
    torch.manual_seed(0)
    model, aux = torch.nn.Conv2d(3, 3, 1), torch.nn.Conv2d(3, 3, 1)
    criterion = SegmentationLoss(terms=parse_terms([{"name": name}]), aux_weight=0.2, ohem_min_kept=10)
    optimizer = torch.optim.SGD([*model.parameters(), *aux.parameters()], lr=2.0 if name in ("dice", "lovasz") else 0.5)
    normalizer = float((target != 255).sum())
    losses = []
    for _ in range(30):
        loss, _ = criterion({"out": model(image), "aux": aux(image)}, target, normalizer)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]  # measured: ratios 0.53 (ce) to 0.72 (lovasz)
