"""Test-time protocols: each profile's size, window, padding and fusion rules, on predictable models."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils.inference import infer, infer_bands, tiling_problem
from utils.protocol import Protocol

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Identity(nn.Module):
    """Logits = the input's 3 channels: the output is the input, so every rule can be computed by hand."""

    def forward(self, x):
        return {"out": x.clone()}


class Ramp(nn.Module):
    """Logits = input + a left-to-right ramp: not flip-equivariant, so flip fusion is visible."""

    def forward(self, x):
        ramp = torch.linspace(0, 1, x.shape[-1]).view(1, 1, 1, -1) * torch.tensor([0.0, 1.0, 2.0]).view(1, 3, 1, 1)
        return {"out": x + ramp}


class Recorder(Identity):
    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.clone())
        return super().forward(x)


def _run(model, image, **protocol):
    protocol = {"base_size": None, "flip": True, **protocol}  # the image at its own size, flipped, unless set
    return infer(model, image, Protocol(**protocol), 3, mean=MEAN, std=STD)


@pytest.mark.parametrize(
    "profile, size, scale, base, expected",
    [
        ("spnet", (1024, 2048), 0.75, 2048, (768, 1536)),
        ("spnet", (5, 7), 1.0, 10, (7, 10)),  # short = round(10 / 7 * 5) = round(7.14)
        ("spnet", (7, 5), 1.25, 10, (12, 9)),  # long = round(12.5) = 12 (round half to even), short = round(8.57)
        ("encoding", (5, 7), 0.75, 10, (6, 8)),  # long = ceil(7.5) = 8, short = int(5 * 8 / 7 + 0.5) = 6
        ("encoding", (1024, 2048), 2.25, 1024, (1152, 2304)),
        ("spnet", (5, 7), 2.0, None, (10, 14)),  # no base size: the image's own long side
    ],
)
def test_scaled_sizes(profile, size, scale, base, expected):
    assert Protocol(profile=profile, base_size=base).scaled_size(*size, scale) == expected


def test_mmseg_keep_ratio_resize():
    p = Protocol(profile="mmseg", resize_to=(2048, 512))
    assert p.scaled_size(683, 512, 1.0) == (683, 512)  # min(2048 / 683, 512 / 512) = 1
    assert p.scaled_size(400, 600, 1.0) == (512, 768)  # min(2048 / 600, 512 / 400) = 1.28
    assert p.scaled_size(400, 600, 0.5) == (256, 384)


def test_window_grids():
    crop = (4, 4)
    spnet, padded = Protocol(profile="spnet", crop_size=crop).window_grid(5, 7)  # stride ceil(8/3) = 3
    assert padded == (5, 7) and spnet == [(0, 0, 4, 4), (0, 3, 4, 7), (1, 0, 5, 4), (1, 3, 5, 7)]
    encoding, _ = Protocol(profile="encoding", crop_size=crop).window_grid(5, 7)  # stride int(8/3) = 2
    assert encoding == [(0, 0, 4, 4), (0, 2, 4, 6), (0, 4, 4, 7), (2, 0, 5, 4), (2, 2, 5, 6), (2, 4, 5, 7)]
    mmseg, _ = Protocol(profile="mmseg", crop_size=crop, stride=(3, 3)).window_grid(5, 7)  # no 4x4 mmseg config
    assert mmseg == [(0, 0, 4, 4), (0, 3, 4, 7), (1, 0, 5, 4), (1, 3, 5, 7)]
    small, padded = Protocol(profile="mmseg", crop_size=crop, stride=(3, 3)).window_grid(3, 3)
    assert small == [(0, 0, 3, 3)] and padded == (3, 3)  # mmseg runs a smaller window, no padding


def test_padding_rules():
    image = torch.rand(1, 3, 3, 5) + 1.0
    black = (-torch.tensor(MEAN) / torch.tensor(STD)).view(3, 1, 1)
    spnet = Recorder()
    _run(spnet, image, profile="spnet", crop_size=(5, 7), flip=False)
    window = spnet.inputs[0][0]
    assert window.shape == (3, 5, 7)
    assert torch.equal(window[:, 1:4, 1:6], image[0])  # centred ...
    assert window[:, 0].abs().sum() == 0 and window[:, :, 0].abs().sum() == 0  # ... in the mean colour (0)
    encoding = Recorder()
    _run(encoding, image, profile="encoding", crop_size=(5, 7), flip=False)
    window = encoding.inputs[0][0]
    assert torch.equal(window[:, :3, :5], image[0])  # top-left ...
    torch.testing.assert_close(window[:, 3:, :], black.expand(3, 2, 7))  # ... in black
    mmseg = Recorder()
    _run(mmseg, image, profile="mmseg", crop_size=(5, 7), stride=(4, 5))  # mmseg has no 5x7 config to take it from
    assert torch.equal(mmseg.inputs[0], image)  # no padding at all


def test_fusion_rules_with_flip():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 4, 6)
    model = Ramp()
    out, out_flipped = model(x)["out"], model(x.flip(-1))["out"].flip(-1)
    whole = dict(mode="whole", flip=True)
    spnet = _run(model, x, profile="spnet", **whole)
    torch.testing.assert_close(spnet, ((out.softmax(1) + out_flipped.softmax(1)) / 2)[0])
    encoding = _run(model, x, profile="encoding", **whole)
    torch.testing.assert_close(encoding, (out + out_flipped).exp()[0])  # exp of the summed logits
    mmseg = _run(model, x, profile="mmseg", **whole)
    torch.testing.assert_close(mmseg, ((out.softmax(1) + out_flipped.softmax(1)) / 2)[0])


def test_overlapping_windows_are_averaged():
    """Window outputs are averaged where windows overlap: a position ramp makes each window's output differ."""
    x = torch.zeros(1, 3, 1, 7)
    got = _run(Ramp(), x, profile="mmseg", crop_size=(1, 4), stride=(1, 3), flip=False)  # windows [0,4) and [3,7)
    ramp = torch.linspace(0, 1, 4) * 2  # channel 2 of the ramp, per window
    logits = torch.zeros(7)
    logits[:4] += ramp
    logits[3:] += ramp
    logits[3] /= 2  # the overlap
    expected = torch.softmax(torch.stack([torch.zeros(7), logits / 2, logits]), 0)
    torch.testing.assert_close(got[:, 0], expected)


def test_scale_fusion_and_resize_rules():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 6, 8)
    up = dict(mode="bilinear")
    spnet = _run(Identity(), x, profile="spnet", mode="whole", flip=False, scales=(2.0,), base_size=8)
    expected = F.interpolate(
        F.interpolate(x, (12, 16), **up, align_corners=False).softmax(1), (6, 8), **up, align_corners=False
    )
    torch.testing.assert_close(spnet, expected[0])
    encoding = _run(Identity(), x, profile="encoding", mode="whole", flip=False, scales=(2.0, 2.0), base_size=8)
    expected = F.interpolate(
        F.interpolate(x, (12, 16), **up, align_corners=True).exp(), (6, 8), **up, align_corners=True
    )
    torch.testing.assert_close(encoding, 2 * expected[0])  # views are summed, not averaged


@pytest.mark.parametrize("profile", ["spnet", "encoding", "mmseg"])
def test_a_window_covering_the_image_equals_whole_image(profile):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 9, 13)
    model = _Wrap(nn.Conv2d(3, 3, 3, padding=1))
    slide = _run(
        model, x, profile=profile, mode="slide", crop_size=(9, 13), stride=(6, 9), base_size=None
    )  # any stride: 1 window
    whole = _run(model, x, profile=profile, mode="whole", base_size=None)
    torch.testing.assert_close(slide, whole)


# mmseg takes its default stride from its own configs, which have no 6x8 window: the stride spnet's rule gives
_MMSEG_6X8 = {"mmseg": (4, 6)}


class _Wrap(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return {"out": self.module(x)}


@pytest.mark.parametrize("profile", ["spnet", "encoding", "mmseg"])
@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_flip_with_a_mirror_symmetric_model_changes_nothing(profile, mode):
    """A model with left-right symmetric kernels is flip-equivariant, so flipping adds nothing.

    The window layout (width 14, crop 8, stride 6: [0, 8) and [6, 14)) is itself symmetric, as
    mmseg flips whole views before sliding. Encoding fuses a window and its flip as exp(l + l'),
    which for this model is exp(2 l): the same as no flip with the logits doubled.
    """
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 3, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    x = torch.randn(1, 3, 10, 14)
    common = dict(profile=profile, mode=mode, crop_size=(6, 8), stride=_MMSEG_6X8.get(profile), base_size=None)
    flipped = _run(_Wrap(conv), x, flip=True, **common)
    if profile == "encoding":
        doubled = _Wrap(nn.Sequential(conv, _Scale(2.0)))
        torch.testing.assert_close(flipped, _run(doubled, x, flip=False, **common))
    else:
        torch.testing.assert_close(flipped, _run(_Wrap(conv), x, flip=False, **common))


class _Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


@pytest.mark.parametrize("profile", ["spnet", "encoding", "mmseg"])
def test_multi_scale_with_one_scale_is_single_scale(profile):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 10, 17)
    model = _Wrap(nn.Conv2d(3, 3, 3, padding=1))
    common = dict(profile=profile, mode="slide", crop_size=(6, 8), stride=_MMSEG_6X8.get(profile), base_size=None)
    single = _run(model, x, **common)
    repeated = _run(model, x, scales=(1.0, 1.0, 1.0), **common)
    torch.testing.assert_close(repeated, 3 * single if profile == "encoding" else single)


def test_window_batching_does_not_change_the_result():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 20, 31)
    model = _Wrap(nn.Conv2d(3, 3, 3, padding=1))
    for profile, stride in (("spnet", None), ("encoding", None), ("mmseg", (6, 6))):
        common = dict(profile=profile, crop_size=(8, 8), stride=stride, base_size=None, flip=True)
        one = _run(model, x, window_batch=1, **common)
        many = _run(model, x, window_batch=7, **common)
        torch.testing.assert_close(one, many)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(scales=()), "scales = [] must have at least 1 value(s)"),
        (dict(scales=(1.0, 0.0)), "scales[1] = 0.0 must be > 0"),
        (dict(crop_size=(0, 64)), "crop_size[0] = 0 must be >= 1"),
        (dict(stride=(32, 0)), "stride[1] = 0 must be >= 1"),
        (dict(window_batch=0), "window_batch = 0 must be >= 1"),
    ],
)
def test_a_protocol_that_cannot_run_is_refused_when_made(fields, message):
    """Built without a config (scripts/benchmark.py, the Python API): refused by the same checks as the
    config's eval section, not a ZeroDivisionError or NaN."""
    with pytest.raises(ValueError, match=rf"^protocol: {re.escape(message)}"):
        Protocol(**fields)


class TinyConv(nn.Module):
    """Random 3x3 convs with zero padding and a ramp: each window's border and position change its scores."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 3, padding=1))

    def forward(self, x):
        ramp = torch.linspace(0, 2, x.shape[-1]).view(1, 1, 1, -1) * torch.arange(5.0).view(1, 5, 1, 1)
        return {"out": self.conv(x) + ramp}


def _bands(model, image, protocol):
    """``infer_bands`` over ``image``, its bands checked to follow each other, joined."""
    rows = lambda top, bottom: image[..., top:bottom, :]  # noqa: E731
    bands = list(infer_bands(model, rows, *image.shape[-2:], protocol, 5, mean=MEAN, std=STD))
    assert [top for top, _ in bands] == [sum(b.shape[1] for _, b in bands[:i]) for i in range(len(bands))]
    return torch.cat([b for _, b in bands], 1), len(bands)


@pytest.mark.parametrize("profile", ["spnet", "encoding", "mmseg"])
@pytest.mark.parametrize("size", [(37, 53), (101, 29), (16, 90), (130, 77)])
@pytest.mark.parametrize("flip", [False, True])
def test_streamed_bands_equal_the_whole_sliding_window(profile, size, flip):
    """Window sums are kept for the rows later windows still cover, the rest is final: the same class ids,
    the same scores (bit for bit, except mmseg's softmax over a view, whose vectorised loop rounds a few
    pixels of a band 1 ulp apart from the whole view's)."""
    model = TinyConv().eval()
    image = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
    for batch in (1, 3):
        protocol = Protocol(profile=profile, crop_size=(24, 20), stride=(13, 11), base_size=None, flip=flip,
                            window_batch=batch)  # fmt: skip
        whole = infer(model, image, protocol, 5, mean=MEAN, std=STD)
        streamed, count = _bands(model, image, protocol)
        assert torch.equal(streamed.argmax(0), whole.argmax(0)), (profile, size, flip, batch)
        if profile == "mmseg":
            torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-7)
        else:
            assert torch.equal(streamed, whole), (profile, size, flip, batch)
        if size[0] > 60:
            assert count > 2  # streamed, not all at the end


def test_streamed_bands_refuse_what_they_cannot_stream():
    model, image = TinyConv().eval(), torch.randn(1, 3, 40, 50)
    cases = [
        (dict(mode="whole"), "the protocol runs the whole image (use --mode slide)"),
        (dict(scales=(1.0, 1.5)), "the protocol resizes it (at its own size, scales 1, 1.5); use one scale"),
        (dict(base_size=100), "the protocol resizes it (long side 100, scales 1); use one scale"),
    ]
    for fields, message in cases:
        protocol = Protocol(**{"crop_size": (24, 20), "base_size": None, **fields})
        with pytest.raises(ValueError, match=re.escape(message)):
            _bands(model, image, protocol)
    assert tiling_problem(Protocol(crop_size=(24, 20), base_size=50), 40, 50) is None  # long side 50 is its own
