"""Block attention modules (SE, scSE, CBAM, BAM, GC): the shared contract, then each paper's formula.

Formula checks run in float64 with the module in eval mode (random BN running statistics where there
are norms), so tolerances are ~1e-10. Weights are read straight from the module's convs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.modules.bam import BAM
from models.modules.cbam import CBAM
from models.modules.global_context import GlobalContext
from models.modules.scse import SCSE
from models.modules.se import SqueezeExcitation

ALL = [SqueezeExcitation, SCSE, CBAM, BAM, GlobalContext]
TOL = dict(rtol=0, atol=1e-10)
# Hidden width >= 2 so no bottleneck is degenerate (a LayerNorm over one value is constant), and GC
# with both fusions so every transform is exercised.
GRAD_KWARGS = {SqueezeExcitation: {"reduction": 4}, SCSE: {}, CBAM: {"reduction": 4}, BAM: {"reduction": 4}}
GRAD_KWARGS[GlobalContext] = {"reduction": 4, "fusions": ["add", "mul"]}


def _mat(conv: nn.Conv2d) -> torch.Tensor:
    return conv.weight[:, :, 0, 0]  # 1x1 conv weight as an (out, in) matrix


def _random_bn_stats(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 1.5)
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)


def _bn_eval(bn: nn.BatchNorm2d, h: torch.Tensor) -> torch.Tensor:
    """BatchNorm in eval mode on (N, C) rows, written out."""
    return (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_contract_backward_and_determinism(cls):
    for kwargs in ({}, GRAD_KWARGS[cls]):
        for size in ((33, 47), (1, 1)):
            module = cls(16, **kwargs).train()
            y = module(torch.randn(2, 16, *size))
            assert module.out_channels == 16 and isinstance(module.out_channels, int)
            assert y.shape == (2, 16, *size)

    module = cls(16, **GRAD_KWARGS[cls]).train()
    for p in module.parameters():  # undo zero inits so no gradient is trivially zero
        nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 16, 33, 47)
    (module(x) * torch.randn(2, 16, 33, 47)).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name

    module.eval()
    assert torch.equal(module(x), module(x))


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@pytest.mark.parametrize("kwargs", [{"reduction": 0}, {"reduction": -2}])
def test_invalid_reduction_raises(cls, kwargs):
    with pytest.raises(ValueError, match="reduction"):
        cls(16, **kwargs)


# --- SE ---------------------------------------------------------------------------------------------


def test_se_formula_zero_gate_and_flip_equivariance():
    se = SqueezeExcitation(16, reduction=4).double().eval()
    x = torch.randn(2, 16, 9, 14, dtype=torch.float64)
    s = x.mean(dim=(2, 3))
    expected = torch.sigmoid(torch.relu(s @ _mat(se.fc1).T + se.fc1.bias) @ _mat(se.fc2).T + se.fc2.bias)
    torch.testing.assert_close(se(x), x * expected[..., None, None], **TOL)
    for dims in ((2,), (3,), (2, 3)):
        torch.testing.assert_close(se(x.flip(dims)), se(x).flip(dims), **TOL)
    nn.init.zeros_(se.fc2.weight)
    nn.init.zeros_(se.fc2.bias)
    assert torch.equal(se(x), 0.5 * x)


# --- scSE -------------------------------------------------------------------------------------------


def test_scse_formula_range_and_zero_weights():
    m = SCSE(16).double().eval()
    assert m.cse_reduce.out_channels == 8  # paper: reduction 2
    x = torch.randn(2, 16, 9, 14, dtype=torch.float64)
    pre = x.mean(dim=(2, 3)) @ _mat(m.cse_reduce).T
    assert (pre < 0).any()  # so the ReLU between the cSE convs is actually exercised
    g_c = torch.sigmoid(torch.relu(pre) @ _mat(m.cse_expand).T)[..., None, None]  # (N, C, 1, 1)
    q = torch.sigmoid(torch.einsum("nchw,c->nhw", x, _mat(m.sse)[0]))[:, None]  # (N, 1, H, W)
    y = m(x)
    torch.testing.assert_close(y, x * (g_c + q), **TOL)
    ratio = y / x
    assert ratio.min() > 0 and ratio.max() < 2
    for p in m.parameters():
        nn.init.zeros_(p)
    assert torch.equal(m(x), x)


# --- CBAM -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_cbam_formula_and_range(kernel_size):
    m = CBAM(16, reduction=4, kernel_size=kernel_size).double().eval()
    gate_at_init = m.spatial_gate(torch.randn(2, 16, 5, 6, dtype=torch.float64))
    assert torch.equal(gate_at_init, torch.full((2, 1, 5, 6), 0.5, dtype=torch.float64))  # official start
    nn.init.normal_(m.spatial_gate.conv.weight)
    x = torch.randn(2, 16, 9, 14, dtype=torch.float64)
    w1, w2 = _mat(m.channel_gate.mlp[0]), _mat(m.channel_gate.mlp[2])

    def mlp(v):
        return torch.relu(v @ w1.T) @ w2.T

    mc = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))[..., None, None]
    x1 = x * mc
    pooled = torch.cat([x1.mean(1, keepdim=True), x1.amax(1, keepdim=True)], 1)  # paper order [mean, max]
    ms = torch.sigmoid(F.conv2d(pooled, m.spatial_gate.conv.weight, padding=kernel_size // 2))
    y = m(x)
    torch.testing.assert_close(y, x * mc * ms, **TOL)
    ratio = y / x
    assert ratio.min() > 0 and ratio.max() < 1


def test_cbam_gate_invariances():
    m = CBAM(16, reduction=4).double().eval()
    nn.init.normal_(m.spatial_gate.conv.weight)
    x = torch.randn(2, 16, 9, 14, dtype=torch.float64)
    spatial = m.spatial_gate(x)
    assert spatial.std() > 0.01
    torch.testing.assert_close(m.spatial_gate(x[:, torch.randperm(16)]), spatial, **TOL)
    perm = torch.randperm(9 * 14)
    x_perm = x.flatten(2)[..., perm].view_as(x)  # positions shuffled
    torch.testing.assert_close(m.channel_gate(x_perm), m.channel_gate(x), **TOL)


@pytest.mark.parametrize("kernel_size", [0, 4, 6])
def test_cbam_even_kernel_raises(kernel_size):
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        CBAM(16, kernel_size=kernel_size)


# --- BAM --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fusion", ["sum", "product"])
def test_bam_gates_and_range(fusion):
    m = BAM(32, reduction=4, fusion=fusion).double()
    _random_bn_stats(m)
    for p in m.parameters():  # biases start at zero: randomise them too
        if p.dim() == 1:
            nn.init.normal_(p, std=0.5)
    m.eval()
    x = torch.rand(2, 32, 33, 47, dtype=torch.float64) + 0.1  # positive, non-square (the survey's pooling bug)
    fc0, bn, fc1 = m.channel_gate[0][0], m.channel_gate[0][1], m.channel_gate[1]
    hidden = torch.relu(_bn_eval(bn, x.mean(dim=(2, 3)) @ _mat(fc0).T + fc0.bias))
    mc = (hidden @ _mat(fc1).T + fc1.bias)[..., None, None]
    torch.testing.assert_close(m.channel_attention(x), mc, **TOL)

    ms = m.spatial_attention(x)
    assert ms.shape == (2, 1, 33, 47)
    logits = mc + ms if fusion == "sum" else mc * ms
    y = m(x)
    torch.testing.assert_close(y, x * (1 + torch.sigmoid(logits)), **TOL)
    ratio = y / x
    assert ratio.min() > 1 and ratio.max() < 2


def test_bam_zero_final_layers_give_one_and_a_half():
    m = BAM(32, reduction=4)
    _random_bn_stats(m)
    m.eval()
    for final in (m.channel_gate[-1], m.spatial_gate[-1]):
        nn.init.zeros_(final.weight)
        nn.init.zeros_(final.bias)
    x = torch.randn(2, 32, 33, 47)
    assert torch.equal(m(x), 1.5 * x)


def test_bam_spatial_gate_structure():
    m = BAM(64, reduction=16, dilation=3, num_dilated_convs=3)
    dilated = [block[0] for block in m.spatial_gate[1:-1]]
    assert [(c.kernel_size, c.dilation, c.padding) for c in dilated] == [((3, 3), (3, 3), (3, 3))] * 3
    assert m.spatial_gate[-1].out_channels == 1 and m.channel_gate[0][0].out_channels == 4
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert all(torch.equal(c.bias, torch.zeros_like(c.bias)) for c in convs)  # official init: zero biases
    assert all(c.weight.abs().min() > 0 for c in convs)
    with pytest.raises(ValueError, match="fusion"):
        BAM(32, fusion="max")


# --- Global context ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["att", "avg"])
def test_gc_identity_at_init_and_mul_half(pooling):
    x = torch.randn(2, 64, 9, 14)  # hidden width 4: with 1 the LayerNorm output is constant and hides the init
    assert torch.equal(GlobalContext(64, pooling=pooling)(x), x)
    assert torch.equal(GlobalContext(64, pooling=pooling, fusions=["mul"])(x), 0.5 * x)  # official init


def test_gc_add_shift_is_constant_over_space():
    m = GlobalContext(16, reduction=4).double()
    nn.init.normal_(m.transform_add[-1].weight)
    x = torch.randn(2, 16, 9, 14, dtype=torch.float64)
    delta = m(x) - x
    assert delta.abs().max() > 1e-3
    torch.testing.assert_close(delta, delta[..., :1, :1].expand_as(delta), **TOL)


def test_gc_context_formula_and_uniform_mask():
    m = GlobalContext(16, reduction=4, fusions=("add", "mul")).double()
    for t in (m.transform_add, m.transform_mul):
        nn.init.normal_(t[-1].weight)
    x = torch.randn(2, 16, 9, 14, dtype=torch.float64)
    logits = torch.einsum("nchw,c->nhw", x, _mat(m.conv_mask)[0]) + m.conv_mask.bias
    weights = torch.softmax(logits.flatten(1), dim=1)  # (N, HW)
    ctx = torch.einsum("ncp,np->nc", x.flatten(2), weights)[..., None, None]
    torch.testing.assert_close(m.context(x), ctx, **TOL)
    expected = x * torch.sigmoid(m.transform_mul(ctx)) + m.transform_add(ctx)  # mul first, then add
    torch.testing.assert_close(m(x), expected, **TOL)

    nn.init.zeros_(m.conv_mask.weight)
    nn.init.zeros_(m.conv_mask.bias)
    torch.testing.assert_close(m.context(x), x.mean(dim=(2, 3), keepdim=True), **TOL)


@pytest.mark.parametrize(
    "kwargs",
    [{"pooling": "max"}, {"fusions": []}, {"fusions": ["add", "sum"]}, {"fusions": "add"}, {"fusions": ["add", "add"]}],
)
def test_gc_invalid_options_raise(kwargs):
    with pytest.raises(ValueError, match="pooling|fusions"):
        GlobalContext(16, **kwargs)
