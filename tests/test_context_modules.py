"""Context modules (non-local, criss-cross, ASPP, PPM, SPP, RFB / RFB-s, SSH): the shared contract, then each
module's maths."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.modules.aspp import ASPP
from models.modules.criss_cross import CrissCrossAttention
from models.modules.non_local import NonLocal2d
from models.modules.pyramid_pooling import PyramidPooling
from models.modules.rfb import RFB, RFBSmall
from models.modules.spp import SPP
from models.modules.ssh import SSHContext

# (class, out_channels for in_channels=16 with the defaults)
CASES = [(NonLocal2d, 16), (CrissCrossAttention, 16), (ASPP, 256), (PyramidPooling, 32), (SPP, 64)]
# Biases kept from the papers whose gradient is identically 0 in training (see test_dead_biases_*).
DEAD_IN_TRAINING = {NonLocal2d: {"phi.bias", "g.bias"}, CrissCrossAttention: {"key_conv.bias"}}


def build(cls: type[nn.Module], in_channels: int = 16) -> nn.Module:
    """As the heads do: pass norm_layer only to modules that take one."""
    if "norm_layer" in inspect.signature(cls).parameters:
        return cls(in_channels, norm_layer=nn.BatchNorm2d)
    return cls(in_channels)


def randomise(module: nn.Module, std: float = 0.1) -> nn.Module:
    """Random parameters (zero-initialised ones included) and random BN running statistics."""
    with torch.no_grad():
        for p in module.parameters():
            nn.init.normal_(p, std=std)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return module


def conv1x1(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    y = torch.einsum("oc,nchw->nohw", conv.weight[:, :, 0, 0], x)
    return y if conv.bias is None else y + conv.bias[None, :, None, None]


def bn_eval(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (x - bn.running_mean[None, :, None, None]) * scale[None, :, None, None] + bn.bias[None, :, None, None]


# ----------------------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("cls, expected", CASES)
@pytest.mark.parametrize("size", [(33, 47), (1, 1)])
def test_shape_contract_train_mode(cls, expected, size):
    module = build(cls).train()
    y = module(torch.randn(2, 16, *size))
    assert module.out_channels == expected
    assert y.shape == (2, expected, *size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("cls, expected", CASES)
def test_gradients_reach_every_parameter(cls, expected):
    module = randomise(build(cls)).double().train()
    x = torch.randn(2, 16, 9, 11, dtype=torch.float64, requires_grad=True)
    y = module(x)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad.abs().sum() > 0  # the only check for the parameter-free SPP
    grads = {name: p.grad for name, p in module.named_parameters()}
    assert all(g is not None for g in grads.values())
    largest = max((g.abs().max() for g in grads.values()), default=torch.tensor(1.0))
    dead = DEAD_IN_TRAINING.get(cls, set())
    for name, g in grads.items():
        if name in dead:
            assert g.abs().max() <= 1e-9 * largest, name
        else:
            assert g.abs().sum() > 0, name


@pytest.mark.parametrize("cls, expected", CASES)
def test_deterministic_eval(cls, expected):
    module = randomise(build(cls)).eval()
    x = torch.randn(2, 16, 9, 11)
    assert torch.equal(module(x), module(x))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: NonLocal2d(8, reduction=0), "reduction"),
        (lambda: CrissCrossAttention(8, recurrence=0), "recurrence"),
        (lambda: CrissCrossAttention(8, reduction=1.5), "reduction"),
        (lambda: ASPP(8, dilations=()), "dilations"),
        (lambda: ASPP(8, dilations=(1, 0)), "dilations"),
        (lambda: PyramidPooling(8, bins=(1, 0)), "bins"),
        (lambda: PyramidPooling(8, reduction=0), "reduction"),
        (lambda: SPP(8, kernel_sizes=(5, 8)), "odd"),
    ],
)
def test_invalid_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ---------------------------------------------------------------------------------------------- non-local


@pytest.mark.parametrize("norm_layer", [nn.BatchNorm2d, None])
@pytest.mark.parametrize("sub_sample", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_non_local_identity_at_init(norm_layer, sub_sample, train):
    module = NonLocal2d(8, sub_sample=sub_sample, norm_layer=norm_layer).train(train)
    x = torch.randn(2, 8, 5, 7)
    assert torch.equal(module(x), x)


def non_local_reference(module: NonLocal2d, x: torch.Tensor, sub_sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``x + BN(W softmax(theta^T phi) g)`` with the 2x2 pool written out (last odd row/column kept)."""
    n, _, h, w = x.shape

    def pool(t: torch.Tensor) -> torch.Tensor:
        if not sub_sample:
            return t
        t = F.pad(t, (0, w % 2, 0, h % 2), value=float("-inf"))
        return t.unflatten(3, (-1, 2)).unflatten(2, (-1, 2)).amax(dim=(3, 5))  # (N, C', ceil(H/2), ceil(W/2))

    theta = conv1x1(x, module.theta).flatten(2)
    phi = pool(conv1x1(x, module.phi)).flatten(2)
    g = pool(conv1x1(x, module.g)).flatten(2)
    attn = torch.softmax(torch.einsum("nci,ncj->nij", theta, phi), dim=-1)
    y = torch.einsum("nij,ncj->nci", attn, g).reshape(n, -1, h, w)
    return x + bn_eval(conv1x1(y, module.out_conv), module.out_norm), attn


@pytest.mark.parametrize("sub_sample", [True, False])
def test_non_local_matches_formula_and_rows_sum_to_one(sub_sample):
    module = randomise(NonLocal2d(8, sub_sample=sub_sample), std=0.5).double().eval()
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    expected, attn = non_local_reference(module, x, sub_sample)
    assert attn.shape == (2, 35, 12 if sub_sample else 35)  # ceil(5/2) * ceil(7/2) keys
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 35, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(module(x), expected, rtol=0, atol=1e-10)


def test_non_local_equivariant_to_spatial_permutations():
    module = randomise(NonLocal2d(8, sub_sample=False), std=0.5).double().eval()
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    y = module(x)
    torch.testing.assert_close(module(x.flip(-1, -2)), y.flip(-1, -2), rtol=0, atol=1e-10)
    perm = torch.randperm(35)
    permuted = module(x.flatten(2)[..., perm].reshape(x.shape))
    torch.testing.assert_close(permuted, y.flatten(2)[..., perm].reshape(y.shape), rtol=0, atol=1e-10)


def test_dead_biases_do_not_change_output():
    """phi's and the key conv's biases shift every energy of a query equally; g's is removed by train BN."""
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    nl = randomise(NonLocal2d(8), std=0.5).double().train()
    cca = randomise(CrissCrossAttention(8, reduction=2), std=0.5).double()
    before = nl(x), cca(x)
    with torch.no_grad():
        for bias in (nl.phi.bias, nl.g.bias, cca.key_conv.bias):
            bias.add_(torch.randn_like(bias))
    torch.testing.assert_close(nl(x), before[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(cca(x), before[1], rtol=0, atol=1e-10)


# -------------------------------------------------------------------------------------------- criss-cross


def random_cca(recurrence: int = 1, std: float = 0.5) -> CrissCrossAttention:
    module = randomise(CrissCrossAttention(8, reduction=2, recurrence=recurrence), std=std).double()
    with torch.no_grad():
        module.gamma.fill_(0.7)
    return module


@pytest.mark.parametrize("recurrence", [1, 2])
def test_criss_cross_identity_when_gamma_is_zero(recurrence):
    module = CrissCrossAttention(8, recurrence=recurrence)
    x = torch.randn(2, 8, 5, 7)
    assert torch.equal(module(x), x)


def test_criss_cross_matches_dense_masked_attention_and_naive_loop():
    module = random_cca()
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    n, c, h, w = x.shape
    q, k, v = (conv1x1(x, conv) for conv in (module.query_conv, module.key_conv, module.value_conv))

    # Dense: all HW x HW energies, masked to -inf outside row ∪ column (each position appears once).
    rows, cols = torch.arange(h * w) // w, torch.arange(h * w) % w
    allowed = (rows[:, None] == rows[None, :]) | (cols[:, None] == cols[None, :])
    energy = torch.einsum("nci,ncj->nij", q.flatten(2), k.flatten(2)).masked_fill(~allowed, float("-inf"))
    out = torch.einsum("nij,ncj->nci", torch.softmax(energy, dim=-1), v.flatten(2)).reshape(n, c, h, w)
    dense = module.gamma * out + x

    # Naive: loop over every position and its H + W - 1 criss-cross positions.
    naive = torch.empty_like(x)
    for b in range(n):
        for i in range(h):
            for j in range(w):
                path = [(r, j) for r in range(h)] + [(i, s) for s in range(w) if s != j]
                assert len(path) == h + w - 1
                a = torch.softmax(torch.stack([q[b, :, i, j] @ k[b, :, r, s] for r, s in path]), dim=0)
                agg = sum(a_rs * v[b, :, r, s] for a_rs, (r, s) in zip(a, path))
                naive[b, :, i, j] = module.gamma * agg + x[b, :, i, j]

    y = module(x)
    torch.testing.assert_close(y, dense, rtol=0, atol=1e-10)
    torch.testing.assert_close(y, naive, rtol=0, atol=1e-10)


@pytest.mark.parametrize("size", [(5, 7), (1, 6), (6, 1), (1, 1)])
def test_criss_cross_attention_sums_to_one_over_h_plus_w_minus_1(size):
    module = random_cca(std=0.1)  # mild energies: no weight underflows to 0, so exactly H + W - 1 are > 0
    h, w = size
    attn = module._attention(torch.randn(2, 8, h, w, dtype=torch.float64))  # (N, H, W, H + W)
    assert attn.shape == (2, h, w, h + w)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, h, w, dtype=torch.float64), rtol=0, atol=1e-12)
    diagonal = attn[..., :h].diagonal(dim1=1, dim2=3)  # (N, W, H): column weight of each position on itself
    assert torch.equal(diagonal, torch.zeros_like(diagonal))  # self counted once, in the row part
    assert ((attn > 0).sum(-1) == h + w - 1).all()


def test_criss_cross_one_pass_sees_only_row_and_column():
    module = random_cca(recurrence=1, std=0.1)
    x = torch.randn(1, 8, 5, 7, dtype=torch.float64)
    p, q = 2, 3
    x2 = x.clone()
    x2[:, :, p, q] += 1.0
    changed = (module(x2) - module(x)).abs().sum(dim=(0, 1))  # (H, W)
    on_path = (torch.arange(5)[:, None] == p) | (torch.arange(7)[None, :] == q)
    assert torch.equal(changed[~on_path], torch.zeros_like(changed[~on_path]))
    assert (changed[on_path] > 0).all()


@pytest.mark.parametrize("recurrence, all_connected", [(1, False), (2, True)])
def test_criss_cross_two_passes_connect_every_pair(recurrence, all_connected):
    module = random_cca(recurrence, std=0.1)  # mild energies: no attention weight underflows to exactly 0
    h, w = 4, 5
    x = torch.randn(1, 8, h, w, dtype=torch.float64)
    perturbed = x.repeat(h * w, 1, 1, 1)  # sample t perturbs input position t
    perturbed.view(h * w, 8, h * w)[torch.arange(h * w), :, torch.arange(h * w)] += 1.0
    changed = (module(perturbed) - module(x)).abs().sum(dim=1)  # (input position, H, W)
    assert bool((changed > 0).all()) is all_connected


# --------------------------------------------------------------------------------------------------- ASPP


def test_aspp_out_channels_default_and_custom():
    assert ASPP(16).out_channels == ASPP(16, None).out_channels == 256
    module = ASPP(16, 24, dilations=(1, 2, 3)).train()
    assert module(torch.randn(2, 16, 33, 47)).shape == (2, 24, 33, 47)


def test_aspp_pooling_branch_is_spatially_constant():
    module = ASPP(16, 8, dilations=(1, 2)).train()
    captured = []
    module.project.register_forward_pre_hook(lambda _, inputs: captured.append(inputs[0]))
    module(torch.randn(2, 16, 33, 47))
    pooled = captured[0][:, -8:]  # the image-pooling branch comes last in the concat
    assert torch.equal(pooled, pooled[..., :1, :1].expand_as(pooled))
    assert not torch.equal(captured[0][:, :8], captured[0][:, :8, :1, :1].expand(-1, -1, 33, 47))


@pytest.mark.parametrize("rate", [1, 2, 3, 5])
def test_aspp_impulse_support_is_the_dilated_grid(rate):
    module = ASPP(4, 6, dilations=(rate,), image_pooling=False).eval()  # default BN stats: 0 maps to 0
    x = torch.zeros(1, 4, 15, 15)
    x[0, :, 7, 7] = torch.randn(4)
    offsets = (0,) if rate == 1 else (-rate, 0, rate)
    grid = torch.zeros(15, 15, dtype=torch.bool)
    for a in offsets:
        for b in offsets:
            grid[7 + a, 7 + b] = True
    branch = module.branches[0]
    conv_support = branch[0](x).abs().sum(dim=(0, 1)) != 0
    assert torch.equal(conv_support, grid)
    branch_support = branch(x).abs().sum(dim=(0, 1)) != 0
    assert not (branch_support & ~grid).any()


def test_aspp_equals_manual_1x1_plus_image_pooling():
    module = randomise(ASPP(6, 4, dilations=(1,)), std=0.5).double().eval()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    conv, bn = module.branches[0][0], module.branches[0][1]
    local = torch.relu(bn_eval(conv1x1(x, conv), bn))
    conv, bn = module.pool[1][0], module.pool[1][1]
    pooled = torch.relu(bn_eval(conv1x1(x.mean(dim=(2, 3), keepdim=True), conv), bn)).expand(-1, -1, 5, 7)
    conv, bn = module.project[0], module.project[1]
    expected = torch.relu(bn_eval(conv1x1(torch.cat([local, pooled], dim=1), conv), bn))
    torch.testing.assert_close(module(x), expected, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------------- PPM


@pytest.mark.parametrize("size", [(33, 47), (1, 1)])
def test_ppm_keeps_input_and_size_and_doubles_channels(size):
    module = PyramidPooling(16).train()
    x = torch.randn(2, 16, *size)
    y = module(x)
    assert module.out_channels == 32
    assert y.shape == (2, 32, *size)
    assert torch.equal(y[:, :16], x)


def test_ppm_bin1_level_is_global_context():
    module = randomise(PyramidPooling(16), std=0.5).double().eval()
    x = torch.randn(2, 16, 33, 47, dtype=torch.float64)
    level = module(x)[:, 16:20]  # bins[0] == 1, Ci = 4
    assert torch.equal(level, level[..., :1, :1].expand_as(level))
    conv, bn = module.levels[0][0], module.levels[0][1]
    expected = torch.relu(bn_eval(conv1x1(x.mean(dim=(2, 3), keepdim=True), conv), bn))
    torch.testing.assert_close(level[..., :1, :1], expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("channels, bins, reduction", [(16, (1, 2, 3, 6), 4), (24, (1, 3), 2), (8, (2,), 8)])
def test_ppm_parameter_count(channels, bins, reduction):
    module = PyramidPooling(channels, bins=bins, reduction=reduction)
    inner = channels // reduction
    assert sum(p.numel() for p in module.parameters()) == len(bins) * (channels * inner + 2 * inner)
    assert module.out_channels == channels + len(bins) * inner


# ---------------------------------------------------------------------------------------------------- SPP


def window_max(x: torch.Tensor, k: int) -> torch.Tensor:
    """k x k stride-1 max over a -inf padded map, written with unfold."""
    padded = F.pad(x, (k // 2,) * 4, value=float("-inf"))
    return padded.unfold(2, k, 1).unfold(3, k, 1).amax(dim=(-1, -2))


@pytest.mark.parametrize("size", [(33, 47), (1, 1)])
def test_spp_route_order_cascade_and_bounds(size):
    module = SPP(16)
    assert module.cascade  # (5, 9, 13) is a chain: the module runs mp5 three times, checked below against
    x = torch.randn(2, 16, *size)  # the plain k x k maxima
    y = module(x)
    assert y.shape == (2, 64, *size)
    mp13, mp9, mp5, identity = y.split(16, dim=1)
    assert torch.equal(identity, x)
    assert torch.equal(mp5, window_max(x, 5))
    assert torch.equal(mp9, window_max(x, 9))
    assert torch.equal(mp13, window_max(x, 13))
    assert torch.equal(mp9, window_max(mp5, 5))
    assert torch.equal(mp13, window_max(window_max(mp5, 5), 5))
    for pooled in (mp13, mp9, mp5):
        assert (pooled >= x).all()


def test_spp_custom_kernels_largest_first_and_input_gradient():
    module = SPP(4, kernel_sizes=(3, 7))
    assert not module.cascade  # 7 is not 3 + 2: each window pooled on its own
    x = torch.randn(2, 4, 9, 11, requires_grad=True)
    y = module(x)
    assert module.out_channels == 12
    assert torch.equal(y[:, :4], window_max(x, 7))
    assert torch.equal(y[:, 4:8], window_max(x, 3))
    y.sum().backward()
    assert x.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------- RFB / RFB-s, SSH

# name -> (factory, in_channels, expected out_channels): RFB needs >= 16 input channels
MULTI_BRANCH = {
    "rfb": (lambda: RFB(32), 32, 32),
    "rfb_small": (lambda: RFBSmall(32), 32, 32),
    "ssh": (lambda: SSHContext(16), 16, 16),
}


@pytest.mark.parametrize("size", [(33, 47), (1, 1)])
@pytest.mark.parametrize("name", sorted(MULTI_BRANCH))
def test_multi_branch_contract_train_mode(name, size):
    factory, cin, cout = MULTI_BRANCH[name]
    module = factory().train()
    y = module(torch.randn(2, cin, *size))
    assert module.out_channels == cout
    assert y.shape == (2, cout, *size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(MULTI_BRANCH))
def test_multi_branch_backward_reaches_every_parameter_and_eval_is_deterministic(name):
    factory, cin, _ = MULTI_BRANCH[name]
    module = randomise(factory()).train()
    x = torch.randn(2, cin, 13, 17, requires_grad=True)  # small: the contract test covers 33x47
    module(x).square().mean().backward()
    assert all(p.grad is not None for p in module.parameters())
    # Non-zero check in eval mode: in train mode a conv bias right before a batch-statistics norm (SSH
    # keeps the biases of its Caffe model) gets an exactly zero gradient, since the norm subtracts the mean.
    module.eval().zero_grad()
    x.grad = None
    y = module(x)
    (y * torch.randn_like(y)).sum().backward()
    for pname, p in module.named_parameters():
        assert p.grad.abs().sum() > 0, pname
    assert (x.grad != 0).any()
    with torch.no_grad():
        assert torch.equal(module(x), module(x))


@pytest.mark.parametrize("cls", [RFB, RFBSmall])
@pytest.mark.parametrize("size", [(33, 47), (1, 1)])
def test_rfb_stride2_all_branches_and_shortcut_agree(cls, size):
    module = cls(32, 48, stride=2).train()
    x = torch.randn(2, 32, *size)
    expected = tuple(math.ceil(s / 2) for s in size)  # (17, 24) for 33x47
    for branch in module.branches:
        assert branch(x).shape[-2:] == expected
    assert module.shortcut(x).shape[-2:] == expected
    assert module(x).shape == (2, 48, *expected)


@pytest.mark.parametrize("cls", [RFB, RFBSmall])
@pytest.mark.parametrize("stride", [1, 2])
def test_rfb_scale_zero_is_relu_of_shortcut(cls, stride):
    module = randomise(cls(32, 24, stride=stride, scale=0.0)).double().eval()
    x = torch.randn(2, 32, 33, 47, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(module(x), torch.relu(module.shortcut(x)))


def test_rfb_forward_equals_formula():
    module = randomise(RFB(32, 16, scale=0.3, visual=2)).double().eval()
    x = torch.randn(2, 32, 13, 9, dtype=torch.float64)
    with torch.no_grad():
        cat = torch.cat([b(x) for b in module.branches], dim=1)
        expected = torch.relu(0.3 * module.linear(cat) + module.shortcut(x))
        torch.testing.assert_close(module(x), expected, rtol=0, atol=1e-10)


def _basic(cin: int, cout: int, kernel_area: int) -> int:
    return cin * cout * kernel_area + 2 * cout  # bias-free conv + norm weight and bias


def test_rfb_parameter_count_matches_official_widths():
    i = 512 // 8  # 64; 3 * (i // 2) = 96
    branch0 = _basic(512, 2 * i, 1) + _basic(2 * i, 2 * i, 9)
    branch1 = _basic(512, i, 1) + _basic(i, 2 * i, 9) + _basic(2 * i, 2 * i, 9)
    branch2 = _basic(512, i, 1) + _basic(i, 96, 9) + _basic(96, 2 * i, 9) + _basic(2 * i, 2 * i, 9)
    tail = _basic(6 * i, 512, 1) + _basic(512, 512, 1)
    assert sum(p.numel() for p in RFB(512, 512).parameters()) == branch0 + branch1 + branch2 + tail


def test_rfb_small_parameter_count_matches_official_widths():
    i = 512 // 4  # 128; i // 2 = 64, 3 * (i // 4) = 96
    branch0 = _basic(512, i, 1) + _basic(i, i, 9)
    branch12 = 2 * (_basic(512, i, 1) + _basic(i, i, 3) + _basic(i, i, 9))
    branch3 = _basic(512, 64, 1) + _basic(64, 96, 3) + _basic(96, i, 3) + _basic(i, i, 9)
    tail = _basic(4 * i, 512, 1) + _basic(512, 512, 1)
    assert sum(p.numel() for p in RFBSmall(512, 512).parameters()) == branch0 + branch12 + branch3 + tail


def test_rfb_dilations_follow_visual():
    module = RFB(32, visual=2)
    assert [branch[-1][0].dilation for branch in module.branches] == [(2, 2), (3, 3), (5, 5)]
    assert [branch[-1][0].dilation for branch in RFBSmall(32).branches] == [(1, 1), (3, 3), (3, 3), (5, 5)]


@pytest.mark.parametrize("cls", [RFB, RFBSmall])
def test_rfb_rejects_too_few_channels(cls):
    cls(16)
    with pytest.raises(ValueError, match=">= 16"):
        cls(15)


@pytest.mark.parametrize("channels", [7, 8])
def test_ssh_output_width(channels):
    module = SSHContext(channels)
    assert module.out_channels == 2 * (channels // 2)
    assert module(torch.randn(2, channels, 33, 47)).shape == (2, 2 * (channels // 2), 33, 47)
    with pytest.raises(ValueError):
        SSHContext(1)


def test_ssh_impulse_response_is_5x5_then_7x7():
    module = SSHContext(8).double().eval()
    # Positive weights, inputs and norm shifts keep every pre-activation positive, so the ReLUs are the
    # identity and a positive impulse changes exactly the positions inside the receptive field (no cancellation).
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.uniform_(0.05, 0.15)
                m.bias.uniform_(0.0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(0.0, 1.0)
                m.running_mean.uniform_(-1.0, 0.0)
                m.running_var.uniform_(0.5, 1.5)
        x = torch.rand(1, 8, 17, 17, dtype=torch.float64)
        y = module(x)
        assert (y > 0).all()
        x[0, 3, 8, 8] += 1.0
        changed = (module(x) - y).abs() > 1e-12  # (1, 8, 17, 17)
    rows = torch.arange(17)
    for half, radius in ((changed[0, :4], 2), (changed[0, 4:], 3)):
        window = ((rows - 8).abs() <= radius)[:, None] & ((rows - 8).abs() <= radius)[None, :]
        assert torch.equal(half, window.expand_as(half))  # every channel: changed inside, unchanged outside
