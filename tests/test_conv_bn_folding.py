"""Conv+BN folding: ``fold_conv_bn`` against ``bn(conv(x))``, ``fold_model`` on small models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models import resnet18

from models.modules.acnet import ACBlock
from models.modules.conv_bn_folding import fold_conv_bn, fold_model
from models.modules.strip_pooling import StripPooling


def _random_stats(model: nn.Module) -> nn.Module:
    """Random running statistics and affine parameters, so folding is not a near-identity; eval mode."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.5)
    return model.eval()


def _conv_bn(c_in: int, c_out: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out)]


def _same(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=rel * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("size", [(33, 47), (1, 1)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("groups", [1, 6])
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_fold_conv_bn_equals_bn_of_conv(size, bias, dilation, groups, dtype, atol):
    conv = nn.Conv2d(6, 6, 3, stride=2, padding=dilation, dilation=dilation, groups=groups, bias=bias, dtype=dtype)
    bn = _random_stats(nn.BatchNorm2d(6, dtype=dtype))
    x = torch.randn(2, 6, *size, dtype=dtype)
    fused = fold_conv_bn(conv, bn)
    ref, out = bn(conv(x)), fused(x)
    assert out.shape == ref.shape == (2, 6, (size[0] + 1) // 2, (size[1] + 1) // 2)
    assert (fused.groups, fused.dilation, fused.stride, fused.weight.dtype) == (groups, (dilation,) * 2, (2, 2), dtype)
    assert (out - ref).abs().max() <= atol
    out.square().sum().backward()  # the folded conv is an ordinary trainable conv
    taps = fused.weight.grad if size != (1, 1) else fused.weight.grad[..., 1, 1]  # 1x1: only the centre tap sees x
    assert taps.abs().min() > 0 and fused.bias.grad.abs().min() > 0


def test_fold_conv_bn_keeps_padding_mode_and_rejects_bad_input():
    conv = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
    bn = _random_stats(nn.BatchNorm2d(4))
    x = torch.randn(2, 4, 9, 7)
    assert _same(fold_conv_bn(conv, bn)(x), bn(conv(x)))
    with pytest.raises(ValueError, match="eval mode"):
        fold_conv_bn(conv, nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="channels"):
        fold_conv_bn(conv, nn.BatchNorm2d(5).eval())


def _fold_and_check(model: nn.Module, x: torch.Tensor):
    ref = model(x)
    report = fold_model(model, x)
    out = model(x)
    refs, outs = (list(ref.values()), list(out.values())) if isinstance(ref, dict) else ([ref], [out])
    assert all(_same(o, r) for o, r in zip(outs, refs, strict=True))
    assert not any(m.training for m in model.modules())
    return report


def test_fold_model_sequential_with_nested_index():
    model = _random_stats(
        nn.Sequential(*_conv_bn(3, 8), nn.ReLU(), _conv_bn(8, 8)[0], nn.Sequential(nn.BatchNorm2d(8)))
    )
    report = _fold_and_check(model, torch.randn(1, 3, 32, 32))
    assert report.folded_pairs == [("0", "1"), ("3", "4.0")] and report.skipped_pairs == report.fused_modules == []
    assert str(report) == "folded 2 conv+BN pairs, fused 0 modules, skipped 0"
    assert isinstance(model[4][0], nn.Identity) and model[0].bias is not None
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())


class _FunctionalReuse(nn.Module):
    """conv_a's output feeds bn_a and is also added functionally, which hooks cannot see."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a, self.bn_a = _conv_bn(3, 8)
        self.conv_b, self.bn_b = _conv_bn(8, 8)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.conv_a(x)
        z = self.bn_a(y) + y
        return {"out": self.bn_b(self.conv_b(z)), "aux": z}


def test_fold_model_skips_pair_whose_conv_output_is_used_functionally():
    model = _random_stats(_FunctionalReuse())
    conv_a, bn_a = model.conv_a, model.bn_a
    report = _fold_and_check(model, torch.randn(1, 3, 32, 32))
    assert report.folded_pairs == [("conv_b", "bn_b")] and report.skipped_pairs == [("conv_a", "bn_a")]
    assert model.conv_a is conv_a and model.bn_a is bn_a and isinstance(model.bn_b, nn.Identity)
    assert (
        str(report)
        == "folded 1 conv+BN pairs, fused 0 modules, skipped 1: conv_a+bn_a (output also used outside the BN)"
    )


class _NotPairs(nn.Module):
    """Conv outputs read by a second module, a BN shared by two paths, a conv feeding two BNs: none may fold."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = _conv_bn(3, 4)
        self.other = nn.Conv2d(4, 4, 1)
        self.shared_bn = nn.BatchNorm2d(4)
        self.alias = self.shared_bn
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn2a, self.bn2b = nn.BatchNorm2d(4), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        z = self.bn(y) + self.other(y)
        z = self.alias(self.conv2(z))
        return self.bn2a(self.conv2(z)) + self.bn2b(self.conv2(z))


def test_fold_model_leaves_non_pairs_alone():
    model = _random_stats(_NotPairs())
    report = _fold_and_check(model, torch.randn(1, 3, 16, 16))
    assert report.folded_pairs == report.skipped_pairs == []
    assert sum(isinstance(m, _BatchNorm) for m in model.modules()) == 4


class _TwoBranch(nn.Module):
    """bn3(conv3x3(x)) + bn1(conv1x1(x)), with a fuse() to one 3x3 conv (ACNet-style)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv3, self.bn3 = _conv_bn(c_in, c_out, 3)
        self.conv1, self.bn1 = _conv_bn(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn3(self.conv3(x)) + self.bn1(self.conv1(x))

    def fuse(self) -> nn.Conv2d:
        fused, one = fold_conv_bn(self.conv3, self.bn3), fold_conv_bn(self.conv1, self.bn1)
        with torch.no_grad():
            fused.weight += F.pad(one.weight, [1, 1, 1, 1])  # the 1x1 kernel is the centre tap
            fused.bias += one.bias
        return fused


class _BadFuse(_TwoBranch):
    def fuse(self) -> nn.Module:
        return fold_conv_bn(self.conv3, self.bn3)  # forgets the 1x1 branch


class _CrashFuse(_TwoBranch):
    def fuse(self) -> nn.Module:
        return nn.Identity()  # 3 channels where 8 are expected: the check's forward raises


def test_fold_model_replaces_modules_with_fuse():
    model = _random_stats(nn.Sequential(_TwoBranch(3, 8), nn.ReLU(), *_conv_bn(8, 8)))
    report = _fold_and_check(model, torch.randn(1, 3, 32, 32))
    assert report.fused_modules == ["0"] and type(model[0]) is nn.Conv2d and model[0].kernel_size == (3, 3)
    assert report.folded_pairs == [("2", "3")] and report.skipped_pairs == []
    assert str(report) == "folded 1 conv+BN pairs, fused 1 modules, skipped 0"


def test_fold_model_fuses_acblocks():
    model = _random_stats(nn.Sequential(ACBlock(3, 8), nn.ReLU(), *_conv_bn(8, 8), ACBlock(8, 8, stride=2)))
    report = _fold_and_check(model, torch.randn(1, 3, 32, 32))
    assert report.fused_modules == ["0", "4"] and report.folded_pairs == [("2", "3")] and report.skipped_pairs == []
    assert not any(isinstance(m, (_BatchNorm, ACBlock)) for m in model.modules())


def test_fold_model_rejects_training_mode():
    with pytest.raises(ValueError, match="eval"):
        fold_model(nn.Sequential(*_conv_bn(3, 4)), torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("bad", [_BadFuse, _CrashFuse])
def test_fold_model_raises_on_wrong_fuse_and_leaves_model_unchanged(bad):
    model = _random_stats(nn.Sequential(bad(3, 8), *_conv_bn(8, 8)))
    block, conv = model[0], model[1]
    with pytest.raises(RuntimeError, match=r"fuse\(\) of \['0'\]"):
        fold_model(model, torch.randn(1, 3, 8, 8))
    assert model[0] is block and model[1] is conv  # unchanged


def test_fold_model_strip_pooling_submodule_named_fuse_is_not_called():
    model = _random_stats(nn.Sequential(*_conv_bn(3, 8), StripPooling(8)))
    report = _fold_and_check(model, torch.randn(2, 3, 33, 47))
    assert report.fused_modules == [] and isinstance(model[2].fuse, nn.Conv2d)
    assert sorted(report.folded_pairs) == [("0", "1"), ("2.conv_h", "2.bn_h"), ("2.conv_w", "2.bn_w")]


def test_fold_model_resnet18():
    model = _random_stats(resnet18(weights=None))
    x = torch.randn(1, 3, 32, 32)
    ref = model(x)
    report = fold_model(model, x)
    assert len(report.folded_pairs) == 20 and report.skipped_pairs == []
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    assert (model(x) - ref).abs().max() <= 1e-4 * ref.abs().max()
