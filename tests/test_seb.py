"""ExFuse's semantic embedding branch (the ``low_level: seb`` fusion): formula, resizing, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.modules.seb import SemanticEmbeddingBranch

UP = dict(mode="bilinear", align_corners=True)


@pytest.mark.parametrize(
    "high_size, low_size",
    [((17, 24), (33, 47)), ((33, 47), (33, 47)), ((1, 1), (1, 1)), ((1, 1), (5, 7))],
)
def test_seb_equals_formula(high_size, low_size):
    module = SemanticEmbeddingBranch(6, 4, low_channels=5).double()
    high = torch.randn(2, 6, *high_size, dtype=torch.float64)
    low = torch.randn(2, 5, *low_size, dtype=torch.float64)
    with torch.no_grad():
        projected = F.conv2d(high, module.high_conv.weight, module.high_conv.bias, padding=1)
        expected = F.interpolate(projected, size=low_size, **UP) * F.conv2d(
            low, module.low_conv.weight, module.low_conv.bias
        )
        y = module(high, low)
        torch.testing.assert_close(y, expected, rtol=0, atol=1e-10)
        if high_size == low_size:  # no resize at all between same-resolution stages
            torch.testing.assert_close(y, projected * module.low_conv(low), rtol=0, atol=1e-10)
    assert module.out_channels == 4 and y.shape == (2, 4, *low_size)


def test_seb_unit_low_path_gives_resized_high_projection():
    module = SemanticEmbeddingBranch(6, 4, low_channels=5).double()
    with torch.no_grad():
        module.low_conv.weight.zero_()
        module.low_conv.bias.fill_(1.0)
        high = torch.randn(2, 6, 17, 24, dtype=torch.float64)
        low = torch.randn(2, 5, 33, 47, dtype=torch.float64)
        expected = F.interpolate(module.high_conv(high), size=(33, 47), **UP)
        torch.testing.assert_close(module(high, low), expected, rtol=0, atol=1e-10)


def test_seb_gradients_reach_every_parameter():
    module = SemanticEmbeddingBranch(6, 4, low_channels=5)
    with torch.no_grad():
        for p in module.parameters():
            nn.init.normal_(p, std=0.1)
    y = module(torch.randn(2, 6, 17, 24), torch.randn(2, 5, 33, 47))
    (y * torch.randn_like(y)).sum().backward()
    for pname, p in module.named_parameters():
        assert p.grad.abs().sum() > 0, pname
