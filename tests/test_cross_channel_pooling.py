"""Cross-channel pooling (maxout over consecutive channel groups): contract, formula, gradient, arguments."""

from __future__ import annotations

import pytest
import torch

from models.modules.cross_channel_pooling import CrossChannelPool


@pytest.mark.parametrize("size", [(33, 47), (1, 1)])
def test_contract_train_mode(size):
    module = CrossChannelPool(16, 4).train()
    y = module(torch.randn(2, 16, *size))
    assert module.out_channels == 4
    assert y.shape == (2, 4, *size)
    assert torch.isfinite(y).all()


def test_input_gradient_reaches_every_output_and_eval_is_deterministic():
    module = CrossChannelPool(16, 4).eval()
    x = torch.randn(2, 16, 13, 17, requires_grad=True)
    y = module(x)
    (y * torch.randn_like(y)).sum().backward()
    assert (x.grad != 0).sum() == y.numel()  # parameter-free: the input gradient is the check
    with torch.no_grad():
        assert torch.equal(module(x), module(x))


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


def test_cross_channel_pool_rejects_a_width_that_does_not_divide_the_input():
    with pytest.raises(ValueError, match=r"in_channels \(10\).*out_channels \(4\)"):
        CrossChannelPool(10, 4)
