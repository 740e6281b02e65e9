"""Block convs (drop-in replacements for a ResNet block's 3x3 conv) and the library-only BlazeBlock: contracts
and paper properties."""

from __future__ import annotations

import inspect
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from models.modules.acnet import ACBlock
from models.modules.blaze_block import BlazeBlock
from models.modules.depthwise_separable import DepthwiseSeparableConv
from models.modules.mixconv import MixConv
from models.modules.selective_kernel import SelectiveKernelConv
from models.modules.split_attention import SplitAttentionConv

BLOCK_CONVS = [SelectiveKernelConv, SplitAttentionConv, ACBlock, MixConv, DepthwiseSeparableConv]
NORMALIZES = {SelectiveKernelConv: True, SplitAttentionConv: True, ACBlock: True, MixConv: False}
NORMALIZES |= {DepthwiseSeparableConv: False}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: intra-op threads only add overhead (and contend on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(cls, channels: int, stride: int = 1, dilation: int = 1) -> nn.Module:
    """As the backbone builds a block conv: norm_layer only where the signature has it."""
    kwargs = {"stride": stride, "dilation": dilation}
    if "norm_layer" in inspect.signature(cls).parameters:
        kwargs["norm_layer"] = nn.BatchNorm2d
    return cls(channels, channels, **kwargs)


@torch.no_grad()
def random_bn(module: nn.Module) -> nn.Module:
    """Random running statistics and affine parameters, so eval-mode formulas are not trivial."""
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.5)
    return module


def bn_eval(t: torch.Tensor, bn: _BatchNorm, ch: slice = slice(None)) -> torch.Tensor:
    """Eval-mode BatchNorm by its formula, on (N, C, ...) tensors holding channels ``ch`` of ``bn``."""
    shape = (1, -1) + (1,) * (t.dim() - 2)
    scale = bn.weight[ch] / torch.sqrt(bn.running_var[ch] + bn.eps)
    return (t - bn.running_mean[ch].view(shape)) * scale.view(shape) + bn.bias[ch].view(shape)


def conv(x: torch.Tensor, c: nn.Conv2d, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
    w = c.weight if weight is None else weight
    return F.conv2d(x, w, bias, c.stride, c.padding, c.dilation, c.groups)


# --- the uniform block-conv contract ---------------------------------------------------------------


@pytest.mark.parametrize("size", [(33, 47), (1, 1)])
@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 2), (1, 4)])
@pytest.mark.parametrize("cls", BLOCK_CONVS, ids=lambda c: c.__name__)
def test_block_conv_contract(cls, stride, dilation, size):
    module = build(cls, 16, stride, dilation).train()
    for p in module.parameters():
        nn.init.normal_(p, std=0.1)  # zero-initialised biases would give trivially zero gradients
    x = torch.randn(2, 16, *size)
    y = module(x)
    assert y.shape == nn.Conv2d(16, 16, 3, stride, padding=dilation, dilation=dilation)(x).shape
    assert module.out_channels == y.shape[1] == 16
    assert cls.normalizes_output is NORMALIZES[cls]
    assert isinstance(cls.DENSE_ALIASES, dict)
    (y * torch.randn_like(y)).sum().backward()  # a plain sum has zero gradient through train-mode BN
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cls", BLOCK_CONVS, ids=lambda c: c.__name__)
def test_dense_aliases(cls):
    module = build(cls, 16)
    dense_shapes = {"conv": (16, 16, 3, 3), "norm": (16,)}
    expected_keys = {"conv", "norm"} if cls in (SelectiveKernelConv, ACBlock) else set()
    assert set(cls.DENSE_ALIASES) == expected_keys
    for key, path in cls.DENSE_ALIASES.items():
        sub = module.get_submodule(path)
        assert tuple(sub.weight.shape) == dense_shapes[key]
        if key == "norm":
            assert isinstance(sub, nn.BatchNorm2d) and tuple(sub.running_var.shape) == (16,)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SelectiveKernelConv(16, num_branches=0),
        lambda: SelectiveKernelConv(16, groups=3),
        lambda: SelectiveKernelConv(16, reduction=0),
        lambda: SplitAttentionConv(16, 16, groups=3),
        lambda: SplitAttentionConv(16, 16, radix=0),
        lambda: SplitAttentionConv(16, 16, kernel_size=2),
        lambda: ACBlock(16, 16, kernel_size=1),
        lambda: ACBlock(16, 16, kernel_size=4),
        lambda: ACBlock(16, 16, padding=-1),
        lambda: MixConv(2),
        lambda: MixConv(16, kernel_sizes=(3, 4)),
        lambda: MixConv(16, kernel_sizes=()),
        lambda: DepthwiseSeparableConv(16, 16, kernel_size=2),
    ],
)
def test_invalid_arguments_raise(make):
    with pytest.raises(ValueError):
        make()


# --- selective kernel ------------------------------------------------------------------------------


@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 2), (2, 4)])
def test_sk_matches_paper_formula(stride, dilation):
    m = random_bn(SelectiveKernelConv(16, num_branches=3, stride=stride, dilation=dilation).double().eval())
    x = torch.randn(2, 16, 21, 19, dtype=torch.float64)
    us = []
    for i, branch in enumerate(m.branches):
        assert branch.conv.dilation == branch.conv.padding == ((i + 1) * dilation,) * 2
        us.append(torch.relu(bn_eval(conv(x, branch.conv), branch.norm)))
    s = sum(us).mean(dim=(2, 3), keepdim=True)
    z = torch.relu(bn_eval(conv(s, m.fuse.conv), m.fuse.norm))
    a = conv(z, m.select).view(2, 3, 16, 1, 1).softmax(dim=1)
    expected = sum(a[:, i] * u for i, u in enumerate(us))
    y = m(x)
    assert y.shape == nn.Conv2d(16, 16, 3, stride, dilation, dilation)(x.float()).shape
    torch.testing.assert_close(y, expected, atol=1e-10, rtol=0)


def test_sk_branch_weights_sum_to_one():
    m = SelectiveKernelConv(16, num_branches=3).double()
    a = m.attention(m.split(torch.randn(2, 16, 9, 11, dtype=torch.float64)))
    assert a.shape == (2, 3, 16, 1, 1) and (a > 0).all()
    torch.testing.assert_close(a.sum(dim=1), torch.ones(2, 16, 1, 1, dtype=torch.float64), atol=1e-12, rtol=0)


def test_sk_single_branch_is_branch_zero_exactly():
    m = random_bn(SelectiveKernelConv(16, num_branches=1).double().eval())
    x = torch.randn(2, 16, 9, 11, dtype=torch.float64)
    assert torch.equal(m(x), m.branches[0](x))


def test_sk_shared_select_weights_give_mean_of_branches():
    m = random_bn(SelectiveKernelConv(16, num_branches=3).double().eval())
    x = torch.randn(2, 16, 9, 11, dtype=torch.float64)
    u = m.split(x)
    assert not torch.allclose(m(x), u.mean(dim=1))  # the property is not trivially true
    with torch.no_grad():
        w = m.select.weight.view(3, 16, -1)  # (M, C, d): one matrix per branch
        w[1:] = w[0]
    torch.testing.assert_close(m(x), u.mean(dim=1), atol=1e-10, rtol=0)


# --- split attention -------------------------------------------------------------------------------


def test_split_attention_matches_per_cardinal_group_formula():
    """Cardinal group k, split r is conv group j = r*K + k (chunk r holds split r of every group)."""
    cin, c, k_, r_ = 24, 16, 2, 3
    m = random_bn(SplitAttentionConv(cin, c, groups=k_, radix=r_, stride=2, dilation=2).double().eval())
    x = torch.randn(2, cin, 13, 11, dtype=torch.float64)
    cg, ig, cin_g = c // k_, m.fc1.out_channels // k_, cin // (k_ * r_)
    out = []
    for k in range(k_):
        us = []
        for r in range(r_):
            j = r * k_ + k
            t = F.conv2d(x[:, j * cin_g : (j + 1) * cin_g], m.conv.weight[j * cg : (j + 1) * cg], None, 2, 2, 2)
            ch = slice(r * c + k * cg, r * c + (k + 1) * cg)
            us.append(torch.relu(bn_eval(t, m.norm, ch)))
        gap = sum(us).mean(dim=(2, 3))  # (N, C/K)
        i_sl, o_sl = slice(k * ig, (k + 1) * ig), slice(k * r_ * cg, (k + 1) * r_ * cg)
        z = gap @ m.fc1.weight[i_sl, :, 0, 0].T + m.fc1.bias[i_sl]
        z = torch.relu(bn_eval(z, m.norm1, i_sl))
        logits = z @ m.fc2.weight[o_sl, :, 0, 0].T + m.fc2.bias[o_sl]  # (N, R*C/K), split-major inside the group
        a = logits.view(2, r_, cg).softmax(dim=1)
        out.append(sum(a[:, r, :, None, None] * us[r] for r in range(r_)))
    y = m(x)
    assert y.shape == (2, c, 7, 6) and m.out_channels == c
    torch.testing.assert_close(y, torch.cat(out, dim=1), atol=1e-10, rtol=0)


def test_split_attention_radix_weights_sum_to_one():
    m = SplitAttentionConv(24, 16, groups=2, radix=3).double()
    a = m.attention(m.split(torch.randn(2, 24, 9, 11, dtype=torch.float64)))
    assert a.shape == (2, 3, 16, 1, 1) and (a > 0).all()
    torch.testing.assert_close(a.sum(dim=1), torch.ones(2, 16, 1, 1, dtype=torch.float64), atol=1e-12, rtol=0)


def test_split_attention_cardinal_groups_are_independent():
    m = random_bn(SplitAttentionConv(16, 16, groups=2, radix=2).double().eval())
    u = m.split(torch.randn(2, 16, 9, 11, dtype=torch.float64))  # (N, R, C, H, W)
    perturbed = u.clone()
    perturbed[:, :, :8] += torch.rand_like(perturbed[:, :, :8])  # cardinal group 0, in every split
    a, b = m.attention(u), m.attention(perturbed)
    torch.testing.assert_close(b[:, :, 8:], a[:, :, 8:], atol=1e-12, rtol=0)
    assert (b[:, :, :8] - a[:, :, :8]).abs().max() > 1e-3


def test_split_attention_radix_one_is_sigmoid_gate():
    m = random_bn(SplitAttentionConv(16, 16, radix=1).double().eval())
    x = torch.randn(2, 16, 9, 11, dtype=torch.float64)
    u = torch.relu(bn_eval(conv(x, m.conv), m.norm))
    z = torch.relu(bn_eval(conv(u.mean(dim=(2, 3), keepdim=True), m.fc1, bias=m.fc1.bias), m.norm1))
    gate = torch.sigmoid(conv(z, m.fc2, bias=m.fc2.bias))
    torch.testing.assert_close(m(x), u * gate, atol=1e-10, rtol=0)


# --- ACNet -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize(
    "k, stride, padding, dilation, groups",
    [
        (3, 1, 1, 1, 1),
        (3, 2, 1, 1, 1),
        (3, 1, 1, 1, 2),
        (3, 1, 2, 2, 1),
        (5, 1, 2, 1, 1),
        (5, 2, None, 2, 2),
        (3, 1, 0, 1, 1),
        (5, 1, 1, 1, 1),
    ],  # the last two crop the input of the asymmetric branches
)
def test_acblock_fuse_equals_branches(k, stride, padding, dilation, groups, dtype, atol):
    m = ACBlock(8, 6, kernel_size=k, stride=stride, padding=padding, dilation=dilation, groups=groups)
    m = random_bn(m.to(dtype).eval())
    x = torch.randn(2, 8, 17, 14, dtype=dtype)
    fused = m.fuse()
    p = dilation * (k // 2) if padding is None else padding
    assert fused.weight.shape == (6, 8 // groups, k, k) and fused.bias is not None and fused.weight.dtype == dtype
    assert (fused.stride, fused.padding, fused.dilation, fused.groups) == (
        (stride,) * 2,
        (p, p),
        (dilation,) * 2,
        groups,
    )
    y = m(x)
    assert y.shape == nn.Conv2d(8, 6, k, stride, p, dilation, groups).to(dtype)(x).shape
    torch.testing.assert_close(fused(x), y, atol=atol, rtol=0)


def test_acblock_fuse_needs_batchnorm_in_eval():
    with pytest.raises(ValueError, match="BatchNorm"):
        ACBlock(8, 8, norm_layer=partial(nn.GroupNorm, 2)).eval().fuse()
    with pytest.raises(ValueError, match="eval"):
        ACBlock(8, 8).train().fuse()


# --- MixConv ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "channels, kernel_sizes, splits",
    [(64, (3, 5, 7), (22, 21, 21)), (65, (3, 5, 7), (22, 22, 21)), (3, (3, 5, 7), (1, 1, 1)), (7, (3, 5), (4, 3))],
)
def test_mixconv_channel_split(channels, kernel_sizes, splits):
    m = MixConv(channels, kernel_sizes=kernel_sizes)
    assert m.splits == splits and sum(m.splits) == channels == m.out_channels
    assert [(c.in_channels, c.groups, c.kernel_size[0]) for c in m.convs] == list(zip(splits, splits, kernel_sizes))


@pytest.mark.parametrize("stride, dilation", [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_mixconv_output_size(stride, dilation):
    x = torch.randn(2, 12, 33, 47)
    y = MixConv(12, stride=stride, dilation=dilation)(x)
    assert y.shape == nn.Conv2d(12, 12, 3, stride, dilation, dilation)(x).shape
    if stride == 1:
        assert y.shape == x.shape


@pytest.mark.parametrize("dilation", [1, 2])
def test_mixconv_impulse_response_stays_in_group_and_footprint(dilation):
    m = MixConv(12, kernel_sizes=(3, 5, 7), dilation=dilation).double()  # groups of 4 channels
    for ch in range(12):
        g, i = ch // 4, ch % 4
        x = torch.zeros(1, 12, 31, 31, dtype=torch.float64)
        x[0, ch, 15, 15] = 1.0
        y = m(x)[0]
        others = torch.ones(12, dtype=torch.bool)
        others[ch] = False
        assert not y[others].any()  # nothing leaves the channel, hence nothing leaves group g
        k = m.kernel_sizes[g]
        reach = dilation * (k // 2)
        expected = torch.zeros(31, 31, dtype=torch.float64)
        # cross-correlation: tap t lands at offset dilation * (k // 2 - t), i.e. the flipped kernel
        expected[15 - reach : 16 + reach : dilation, 15 - reach : 16 + reach : dilation] = (
            m.convs[g].weight[i, 0].flip(0, 1)
        )
        assert torch.equal(y[ch], expected)


# --- depthwise-separable ---------------------------------------------------------------------------


@pytest.mark.parametrize("k, stride, dilation", [(3, 1, 1), (3, 2, 2), (5, 2, 1)])
def test_depthwise_separable_equals_dense_conv(k, stride, dilation):
    m = DepthwiseSeparableConv(6, 10, kernel_size=k, stride=stride, dilation=dilation).double()
    for p in m.parameters():
        nn.init.normal_(p)
    d, b_d = m.depthwise.weight[:, 0], m.depthwise.bias  # (C, k, k), (C,)
    p_, b_p = m.pointwise.weight[:, :, 0, 0], m.pointwise.bias  # (O, C), (O,)
    weight = p_[:, :, None, None] * d[None]  # (O, C, k, k)
    x = torch.randn(2, 6, 15, 12, dtype=torch.float64)
    expected = F.conv2d(x, weight, p_ @ b_d + b_p, stride, dilation * (k // 2), dilation)
    torch.testing.assert_close(m(x), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("norm_layer", [None, nn.BatchNorm2d])
@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_separable_parameter_count(bias, norm_layer):
    cin, cout, k = 6, 10, 5
    m = DepthwiseSeparableConv(cin, cout, kernel_size=k, bias=bias, norm_layer=norm_layer)
    expected = k * k * cin + cin * cout + (cout if bias else 0)
    expected += 2 * cin if norm_layer else (cin if bias else 0)  # the norm's affine replaces the dw bias
    assert sum(p.numel() for p in m.parameters()) == expected


def test_depthwise_separable_mobilenet_form():
    m = random_bn(DepthwiseSeparableConv(6, 10, norm_layer=nn.BatchNorm2d).double().eval())
    nn.init.normal_(m.pointwise.bias)
    x = torch.randn(2, 6, 9, 11, dtype=torch.float64)
    expected = conv(torch.relu(bn_eval(conv(x, m.depthwise), m.norm)), m.pointwise, bias=m.pointwise.bias)
    torch.testing.assert_close(m(x), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("norm_layer", [None, nn.BatchNorm2d])
@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_depthwise_separable_output_size(stride, dilation, norm_layer):
    x = torch.randn(2, 6, 33, 47)
    y = DepthwiseSeparableConv(6, 10, stride=stride, dilation=dilation, norm_layer=norm_layer)(x)
    assert y.shape == nn.Conv2d(6, 10, 3, stride, dilation, dilation)(x).shape


# --- BlazeBlock (library only: no dilation, so in no table) -------------------------------------------

BLAZE = {  # name -> (factory, in_channels, expected out_channels)
    "blaze_single": (lambda: BlazeBlock(16, 24), 16, 24),
    "blaze_double": (lambda: BlazeBlock(16, 24, mid_channels=8), 16, 24),
}


@pytest.mark.parametrize("size", [(33, 47), (1, 1)])
@pytest.mark.parametrize("name", sorted(BLAZE))
def test_blaze_contract_train_mode(name, size):
    factory, cin, cout = BLAZE[name]
    module = factory().train()
    y = module(torch.randn(2, cin, *size))
    assert module.out_channels == cout
    assert y.shape == (2, cout, *size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(BLAZE))
def test_blaze_backward_reaches_every_parameter_and_eval_is_deterministic(name):
    factory, cin, _ = BLAZE[name]
    module = factory()
    with torch.no_grad():
        for p in module.parameters():
            nn.init.normal_(p, std=0.1)
    random_bn(module).train()
    x = torch.randn(2, cin, 13, 17, requires_grad=True)  # small: the contract test covers 33x47
    module(x).square().mean().backward()
    assert all(p.grad is not None for p in module.parameters())
    # Non-zero check in eval mode: in train mode a conv bias right before a batch-statistics norm (BlazeBlock
    # keeps the biases of the PyTorch port) gets an exactly zero gradient, since the norm subtracts the mean.
    module.eval().zero_grad()
    x.grad = None
    y = module(x)
    (y * torch.randn_like(y)).sum().backward()
    for pname, p in module.named_parameters():
        assert p.grad.abs().sum() > 0, pname
    assert (x.grad != 0).any()
    with torch.no_grad():
        assert torch.equal(module(x), module(x))


def _blaze_shortcut(x: torch.Tensor, stride: int, cout: int) -> torch.Tensor:
    """Pool written as a reshape: pad odd sizes with -inf (never the max), then 2x2 groups."""
    if stride == 2:
        n, c, h, w = x.shape
        x = F.pad(x, (0, w % 2, 0, h % 2), value=-math.inf)
        x = x.reshape(n, c, (h + 1) // 2, 2, (w + 1) // 2, 2).amax(dim=(3, 5))  # (B, C, ceil(H/2), ceil(W/2))
    return torch.cat([x, x.new_zeros(x.shape[0], cout - x.shape[1], *x.shape[2:])], dim=1)


@pytest.mark.parametrize("size", [(32, 48), (33, 47)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("mid", [None, 8])
def test_blaze_zero_convs_give_relu_of_shortcut(mid, stride, size):
    module = BlazeBlock(16, 24, mid_channels=mid, stride=stride).double().eval()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
    # Norms keep weight 1, bias 0, running mean 0, var 1: they map the zero conv output to exactly 0 (eps only
    # scales the zero), so the main path is 0.
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    with torch.no_grad():
        y = module(x)
    assert torch.equal(y, torch.relu(_blaze_shortcut(x, stride, 24)))
    assert torch.equal(y[:, 16:], torch.zeros_like(y[:, 16:]))


@pytest.mark.parametrize("size", [(32, 48), (33, 47), (1, 1)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("mid", [None, 8])
def test_blaze_shapes(mid, stride, size):
    module = BlazeBlock(16, 24, mid_channels=mid, stride=stride).train()
    y = module(torch.randn(2, 16, *size))
    assert y.shape == (2, 24, *(math.ceil(s / stride) for s in size))
    assert len(module.main) == (2 if mid is None else 4)


def test_blaze_rejects_bad_arguments():
    with pytest.raises(ValueError, match="out_channels"):
        BlazeBlock(24, 16)
    with pytest.raises(ValueError, match="stride"):
        BlazeBlock(16, 16, stride=3)
    with pytest.raises(ValueError, match="kernel_size"):
        BlazeBlock(16, 16, kernel_size=4)
    with pytest.raises(ValueError, match="mid_channels"):
        BlazeBlock(16, 16, mid_channels=0)
