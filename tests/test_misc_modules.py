"""RFB / RFB-s, SSH context, ExFuse SEB, cross-channel pooling and BlazeBlock: contracts and spec properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.modules.blaze_block import BlazeBlock
from models.modules.cross_channel_pooling import CrossChannelPool
from models.modules.rfb import RFB, RFBSmall
from models.modules.seb import SemanticEmbeddingBranch
from models.modules.ssh import SSHContext

UP = dict(mode="bilinear", align_corners=True)

# name -> (factory, in_channels, expected out_channels)
CASES = {
    "rfb": (lambda: RFB(32), 32, 32),
    "rfb_small": (lambda: RFBSmall(32), 32, 32),
    "ssh": (lambda: SSHContext(16), 16, 16),
    "cross_channel_pool": (lambda: CrossChannelPool(16, 4), 16, 4),
    "blaze_single": (lambda: BlazeBlock(16, 24), 16, 24),
    "blaze_double": (lambda: BlazeBlock(16, 24, mid_channels=8), 16, 24),
}


def _randomise(module: nn.Module) -> nn.Module:
    """Random parameters (zero-initialised ones included) and random norm running statistics."""
    with torch.no_grad():
        for p in module.parameters():
            nn.init.normal_(p, std=0.1)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return module


@pytest.mark.parametrize("size", [(33, 47), (1, 1)])
@pytest.mark.parametrize("name", sorted(CASES))
def test_contract_train_mode(name, size):
    factory, cin, cout = CASES[name]
    module = factory().train()
    y = module(torch.randn(2, cin, *size))
    assert module.out_channels == cout
    assert y.shape == (2, cout, *size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_reaches_every_parameter_and_eval_is_deterministic(name):
    factory, cin, _ = CASES[name]
    module = _randomise(factory()).train()
    x = torch.randn(2, cin, 13, 17, requires_grad=True)  # small: the contract test covers 33x47
    module(x).square().mean().backward()
    assert all(p.grad is not None for p in module.parameters())
    # Non-zero check in eval mode: in train mode a conv bias right before a batch-statistics norm (SSH,
    # BlazeBlock keep the doc's biases) gets an exactly zero gradient, since the norm subtracts the mean.
    module.eval().zero_grad()
    x.grad = None
    y = module(x)
    (y * torch.randn_like(y)).sum().backward()
    for pname, p in module.named_parameters():
        assert p.grad.abs().sum() > 0, pname
    if name == "cross_channel_pool":  # parameter-free: the input gradient is the check
        assert (x.grad != 0).sum() == y.numel()
    else:
        assert (x.grad != 0).any()
    with torch.no_grad():
        assert torch.equal(module(x), module(x))


# --- RFB / RFB-s ---------------------------------------------------------------------------------


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
    module = _randomise(cls(32, 24, stride=stride, scale=0.0)).double().eval()
    x = torch.randn(2, 32, 33, 47, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(module(x), torch.relu(module.shortcut(x)))


def test_rfb_forward_equals_formula():
    module = _randomise(RFB(32, 16, scale=0.3, visual=2)).double().eval()
    x = torch.randn(2, 32, 13, 9, dtype=torch.float64)
    with torch.no_grad():
        cat = torch.cat([b(x) for b in module.branches], dim=1)
        expected = torch.relu(0.3 * module.linear(cat) + module.shortcut(x))
        torch.testing.assert_close(module(x), expected, rtol=0, atol=1e-10)


def _basic(cin: int, cout: int, kernel_area: int) -> int:
    return cin * cout * kernel_area + 2 * cout  # bias-free conv + norm weight and bias


def test_rfb_parameter_count_matches_spec_widths():
    i = 512 // 8  # 64; 3 * (i // 2) = 96
    branch0 = _basic(512, 2 * i, 1) + _basic(2 * i, 2 * i, 9)
    branch1 = _basic(512, i, 1) + _basic(i, 2 * i, 9) + _basic(2 * i, 2 * i, 9)
    branch2 = _basic(512, i, 1) + _basic(i, 96, 9) + _basic(96, 2 * i, 9) + _basic(2 * i, 2 * i, 9)
    tail = _basic(6 * i, 512, 1) + _basic(512, 512, 1)
    assert sum(p.numel() for p in RFB(512, 512).parameters()) == branch0 + branch1 + branch2 + tail


def test_rfb_small_parameter_count_matches_spec_widths():
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


# --- SSH context ---------------------------------------------------------------------------------


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


# --- ExFuse SEB ----------------------------------------------------------------------------------


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
    module = _randomise(SemanticEmbeddingBranch(6, 4, low_channels=5))
    y = module(torch.randn(2, 6, 17, 24), torch.randn(2, 5, 33, 47))
    (y * torch.randn_like(y)).sum().backward()
    for pname, p in module.named_parameters():
        assert p.grad.abs().sum() > 0, pname


# --- cross-channel pooling -----------------------------------------------------------------------


@pytest.mark.parametrize("cin, cout", [(16, 4), (12, 4), (5, 5), (8, 1)])
def test_cross_channel_pool_equals_reshape_and_loop(cin, cout):
    x = torch.randn(2, cin, 7, 9, dtype=torch.float64)
    k = cin // cout
    y_max = CrossChannelPool(cin, cout)(x)
    y_avg = CrossChannelPool(cin, cout, mode="avg")(x)
    assert torch.equal(y_max, x.reshape(2, cout, k, 7, 9).max(dim=2).values)
    for j in range(cout):
        group = x[:, j * k : (j + 1) * k]  # consecutive channels
        assert torch.equal(y_max[:, j], group.max(dim=1).values)
        torch.testing.assert_close(y_avg[:, j], group.mean(dim=1), rtol=0, atol=1e-12)


def test_cross_channel_pool_gradient_reaches_only_the_argmax():
    module = CrossChannelPool(12, 4)
    assert list(module.parameters()) == [] and module.state_dict() == {}
    x = torch.randn(2, 12, 5, 7, requires_grad=True)
    module(x).sum().backward()
    argmax = x.detach().reshape(2, 4, 3, 5, 7).argmax(dim=2, keepdim=True)  # (B, C/k, 1, H, W)
    expected = torch.zeros(2, 4, 3, 5, 7).scatter_(2, argmax, 1.0).reshape(2, 12, 5, 7)
    assert torch.equal(x.grad, expected)  # one non-zero per group per pixel


def test_cross_channel_pool_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"in_channels \(10\).*out_channels \(4\)"):
        CrossChannelPool(10, 4)
    with pytest.raises(ValueError, match="mode"):
        CrossChannelPool(8, 4, mode="min")


# --- BlazeBlock ----------------------------------------------------------------------------------


def _shortcut(x: torch.Tensor, stride: int, cout: int) -> torch.Tensor:
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
    assert torch.equal(y, torch.relu(_shortcut(x, stride, 24)))
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
