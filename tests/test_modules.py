"""Plug-and-play modules: the contract for every registered module, then SPM / MPM specifics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.modules import BLOCK_ATTENTION, CONTEXT_MODULES, MixedPooling, StripPooling
from official_reference import _mpm


@pytest.mark.parametrize("name", sorted(BLOCK_ATTENTION))
@pytest.mark.parametrize("size", [(33, 47), (1, 5), (6, 1)])
def test_block_attention_contract(name, size):
    module = BLOCK_ATTENTION[name](16, norm_layer=torch.nn.BatchNorm2d)
    x = torch.randn(2, 16, *size, requires_grad=True)
    y = module(x)
    assert module.out_channels == 16
    assert y.shape == x.shape
    y.square().mean().backward()
    assert all(p.grad is not None for p in module.parameters())


@pytest.mark.parametrize("name", sorted(CONTEXT_MODULES))
def test_context_module_contract(name):
    module = CONTEXT_MODULES[name](16, norm_layer=torch.nn.BatchNorm2d)
    y = module(torch.randn(2, 16, 33, 47))
    assert y.shape == (2, module.out_channels, 33, 47)


@pytest.mark.parametrize("h, w", [(13, 17), (1, 9), (8, 1), (97, 129)])
def test_strip_broadcast_equals_bilinear_align_corners(h, w):
    """The cheap ``expand`` of a pooled strip is exactly bilinear interpolation (align_corners=True)."""
    x = torch.randn(2, 3, h, w)
    col = x.mean(dim=3, keepdim=True)  # (B, C, H, 1)
    row = x.mean(dim=2, keepdim=True)  # (B, C, 1, W)
    up = dict(mode="bilinear", align_corners=True)
    assert torch.equal(col.expand(-1, -1, h, w), F.interpolate(col, (h, w), **up))
    assert torch.equal(row.expand(-1, -1, h, w), F.interpolate(row, (h, w), **up))


def test_strip_pooling_equals_interpolation_formula():
    """SPM output is bit-identical to the formula written with F.interpolate (the slow form)."""
    spm = StripPooling(8).eval()
    for bn in (spm.bn_h, spm.bn_w):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 8, 11, 19)
    up = dict(size=(11, 19), mode="bilinear", align_corners=True)
    h = F.interpolate(spm.bn_h(spm.conv_h(F.adaptive_avg_pool2d(x, (11, 1)))), **up)
    w = F.interpolate(spm.bn_w(spm.conv_w(F.adaptive_avg_pool2d(x, (1, 19)))), **up)
    expected = x * torch.sigmoid(spm.fuse(torch.relu(h + w)))
    torch.testing.assert_close(spm(x), expected, rtol=0, atol=1e-6)


def test_strip_pooling_gate_range_and_locality():
    spm = StripPooling(4).eval()
    x = torch.rand(1, 4, 12, 12) + 0.1  # positive, so y / x is the gate
    y = spm(x)
    gate = y / x
    assert gate.min() > 0 and gate.max() < 1
    # A change at (p, q) only reaches positions within one row/column of p's row or q's column
    # (the strip convs have kernel 3), so (i, j) with |i - p| > 1 and |j - q| > 1 is unaffected.
    p, q = 5, 6
    x2 = x.clone()
    x2[..., p, q] += 3.0
    changed = (spm(x2) - y).abs().amax(dim=1)[0] > 0
    rows = torch.arange(12)[:, None]
    cols = torch.arange(12)[None, :]
    far = ((rows - p).abs() > 1) & ((cols - q).abs() > 1)
    assert not changed[far].any()
    assert changed[p, q]


def test_mixed_pooling_properties():
    mpm = MixedPooling(16).eval()
    x = torch.randn(2, 16, 9, 14)
    assert (mpm(x) >= 0).all()
    torch.nn.init.zeros_(mpm.project[1].weight)
    torch.nn.init.zeros_(mpm.project[1].bias)
    assert torch.equal(mpm(x), torch.relu(x))


def test_mixed_pooling_parameter_count():
    with torch.device("meta"):
        mpm = MixedPooling(1024)
    assert sum(p.numel() for p in mpm.parameters()) == 4_397_568  # official_spnet.md


def test_mixed_pooling_matches_official_computation():
    """Our MPM with the official module's tensors gives the official output (float64)."""
    from models.convert import _MPM_PARTS

    mpm = MixedPooling(16).double().eval()
    for m in mpm.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.0)
            m.bias.data.normal_()
    ours = mpm.state_dict()
    official = {}
    for old, new in _MPM_PARTS.items():
        for key, value in ours.items():
            if key.startswith(new + "."):
                official["mpm." + old + key[len(new) :]] = value
    assert len(official) == len(ours)
    x = torch.randn(2, 16, 13, 17, dtype=torch.float64)
    torch.testing.assert_close(mpm(x), _mpm(x, official, "mpm"), rtol=1e-12, atol=1e-12)
