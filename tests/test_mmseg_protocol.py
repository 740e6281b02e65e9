"""The ``mmseg`` profile equals MMSegmentation 0.x: sizes, default strides, and ``aug_test`` end to end."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from mmseg_reference import aug_test, size_0x, size_1x_tta
from utils.inference import infer
from utils.protocol import Protocol

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


@pytest.mark.parametrize("resize_to", [None, (2048, 512), (2048, 1024), (512, 512), (30, 20)])
def test_sizes_equal_mmcv_rescale_of_multi_scale_flip_aug(resize_to):
    protocol = Protocol(profile="mmseg", resize_to=resize_to)
    for h, w in itertools.product(range(1, 160, 3), range(1, 160, 7)):
        for ratio in RATIOS:
            assert protocol.scaled_size(h, w, ratio) == size_0x(h, w, resize_to, ratio), (h, w, ratio)


def test_sizes_where_one_rounding_was_one_pixel_off():
    """mmseg truncates the scaled target, fits, then rounds; scaling the fitted factor and rounding once
    (the rule before) gives one pixel more here."""
    assert Protocol(profile="mmseg").scaled_size(97, 131, 1.25) == (121, 163)  # was (121, 164)
    assert Protocol(profile="mmseg", resize_to=(2048, 512)).scaled_size(768, 771, 1.25) == (640, 643)  # was 642
    assert size_1x_tta(20, 27, 0.5) == (10, 14) != Protocol(profile="mmseg").scaled_size(20, 27, 0.5)  # 1.x rounds


def test_default_strides_are_those_of_mmseg_configs():
    strides = {crop: Protocol(profile="mmseg", crop_size=(crop, crop)).strides[0] for crop in (480, 512, 640, 769)}
    assert strides == {480: 320, 512: 341, 640: 426, 769: 513}
    assert Protocol(profile="mmseg", crop_size=(700, 700), stride=(400, 400)).strides == (400, 400)
    with pytest.raises(ValueError, match=r"mmseg has no config with a 700x700 sliding window .* --stride H W"):
        Protocol(profile="mmseg", crop_size=(700, 700))
    Protocol(profile="mmseg", mode="whole", crop_size=(700, 700))  # no windows, no stride needed


class _Tiny(nn.Module):
    """A random two-layer conv net: position-dependent near the borders, not flip-equivariant."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=2, dilation=2))

    def forward(self, x):
        return {"out": self.net(x)}


@pytest.mark.parametrize(
    "size, resize_to, scales, flip, mode, crop, stride",
    [
        ((13, 19), None, (1.0,), False, "slide", (8, 8), (5, 5)),
        ((13, 19), None, (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), True, "slide", (8, 8), (5, 5)),
        ((17, 11), (24, 16), (0.5, 1.0, 1.25), True, "slide", (9, 7), (6, 4)),  # non-square crop and stride
        ((12, 20), (30, 20), (0.75, 1.5), True, "slide", (16, 16), (10, 10)),  # views smaller than the crop
        ((97, 131), None, (1.25,), True, "slide", (64, 64), (42, 42)),  # the 121x163 view
        ((13, 19), (40, 24), (0.5, 1.0, 1.75), True, "whole", (8, 8), None),
    ],
)
def test_inference_equals_mmseg_aug_test(size, resize_to, scales, flip, mode, crop, stride):
    torch.manual_seed(0)
    model = _Tiny().eval()
    image = torch.randn(1, 3, *size)
    protocol = Protocol(
        profile="mmseg", mode=mode, crop_size=crop, stride=stride, scales=scales, flip=flip, resize_to=resize_to
    )
    ours = infer(model, image, protocol, 4, mean=MEAN, std=STD)
    with torch.no_grad():
        theirs = aug_test(
            lambda x: model(x)["out"],
            np.ascontiguousarray(image[0].permute(1, 2, 0).numpy()),
            resize_to,
            list(scales),
            flip,
            {"mode": mode, "crop_size": crop, "stride": stride, "out_channels": 4},
        )
    torch.testing.assert_close(ours, theirs[0], atol=1e-5, rtol=0)
