"""Plug-and-play modules: the contract of every table (attention, context, block conv, low-level fusion),
then SPM / MPM specifics. Each module's own properties are pinned in tests/test_*_modules.py."""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import models.modules as modules
from models.modules import (
    BLOCK_ATTENTION,
    BLOCK_CONVS,
    CONTEXT_MODULES,
    LOW_LEVEL_FUSIONS,
    MixedPooling,
    StripPooling,
)
from official_reference import _mpm


def _randomise(module: torch.nn.Module) -> None:
    """Random parameters, so that identity-at-init modules (zero-initialised gates) pass gradients on."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.1)


def _build(cls, *args, **kwargs):
    """As the builders do: ``norm_layer`` only for classes whose signature has it."""
    if "norm_layer" in inspect.signature(cls).parameters:
        kwargs["norm_layer"] = torch.nn.BatchNorm2d
    return cls(*args, **kwargs)


def _check_gradients(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Gradients reach every parameter, and every weight's gradient is non-zero.

    Exceptions that are exact mathematics, not bugs: a bias may get exactly 0 (a bias before a
    training-mode norm is removed by it; a key bias shifts every score of a softmax equally),
    and on a 1x1 map attention has one position, so its query / key gradients are 0 too.
    """
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    single = x.shape[-2:] == (1, 1)
    missing = [n for n, p in module.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    zero = [n for n, p in module.named_parameters() if not n.endswith("bias") and not single and not p.grad.any()]
    assert missing == [] and zero == []


@pytest.mark.parametrize("name", sorted(BLOCK_ATTENTION))
@pytest.mark.parametrize("size", [(33, 47), (1, 1), (1, 5), (6, 1)])
def test_block_attention_contract(name, size):
    module = _build(BLOCK_ATTENTION[name], 64).train()  # 64: default reductions (16) keep 4 hidden channels
    _randomise(module)
    x = torch.randn(2, 64, *size, requires_grad=True)
    y = module(x)
    assert module.out_channels == 64 and y.shape == x.shape
    _check_gradients(module, x, y)


@pytest.mark.parametrize("name", sorted(CONTEXT_MODULES))
@pytest.mark.parametrize("size", [(33, 47), (1, 1)])
def test_context_module_contract(name, size):
    module = _build(CONTEXT_MODULES[name], 64).train()
    _randomise(module)
    x = torch.randn(2, 64, *size, requires_grad=True)
    y = module(x)
    assert y.shape == (2, module.out_channels, *size)
    _check_gradients(module, x, y)
    module.eval()
    assert torch.equal(module(x), module(x))


@pytest.mark.parametrize("name", sorted(BLOCK_CONVS))
@pytest.mark.parametrize("size", [(33, 47), (1, 1)])
@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 2), (1, 4)])
def test_block_conv_contract(name, size, stride, dilation):
    """A block conv gives the dense 3x3 conv's output size, so it drops into any residual block."""
    cls = BLOCK_CONVS[name]
    module = _build(cls, 16, 16, stride=stride, dilation=dilation).train()
    _randomise(module)
    x = torch.randn(2, 16, *size, requires_grad=True)
    y = module(x)
    dense = torch.nn.Conv2d(16, 16, 3, stride, padding=dilation, dilation=dilation)
    assert y.shape == dense(x).shape and module.out_channels == 16
    assert isinstance(cls.normalizes_output, bool) and isinstance(cls.DENSE_ALIASES, dict)
    _check_gradients(module, x, y)


FAMILY = {
    **{f"attention:{n}": (lambda cls=cls: _build(cls, 64)) for n, cls in BLOCK_ATTENTION.items()},
    **{f"context:{n}": (lambda cls=cls: _build(cls, 64)) for n, cls in CONTEXT_MODULES.items()},
    **{f"conv:{n}": (lambda cls=cls: _build(cls, 64, 64, stride=1, dilation=2)) for n, cls in BLOCK_CONVS.items()},
}


def _plain_pooling(module: torch.nn.Module) -> torch.nn.Module:
    module.fast_pool = False
    return module


FAMILY |= {  # SPM and MPM with their strip pooling fast path off too (utils/fast_paths.py)
    "attention:strip(plain pooling)": lambda: _plain_pooling(_build(StripPooling, 64)),
    "context:mpm(plain pooling)": lambda: _plain_pooling(_build(MixedPooling, 64)),
}


def _train_step(module: torch.nn.Module, x: torch.Tensor, dtype, memory_format) -> list[torch.Tensor]:
    """Output, input gradient and parameter gradients (float64) of a training-mode step."""
    module = module.to(dtype).to(memory_format=memory_format).train()
    x = x.to(dtype).clone(memory_format=memory_format).requires_grad_(True)
    y = module(x)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y.backward(grad.to(dtype).contiguous(memory_format=memory_format))
    return [y.detach().double(), x.grad.double(), *(p.grad.double() for p in module.parameters())]


@pytest.mark.parametrize("name", sorted(FAMILY))
@pytest.mark.parametrize("size", [(17, 23), (9, 1)])
def test_every_module_trains_the_same_in_channels_last(name, size):
    """channels_last (the CPU and CUDA default) gives the float64 NCHW output and every gradient to fp32
    rounding: a layout an op misreads (as PyTorch's CPU batch_norm backward misread the strip conv's
    once, gradients 100% off) fails here for every module of the family, not only SPNet's."""
    torch.manual_seed(0)
    module = FAMILY[name]()
    _randomise(module)
    x = torch.randn(2, 64, *size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    reference = _train_step(copy.deepcopy(module), x, torch.float64, torch.contiguous_format)
    channels_last = _train_step(copy.deepcopy(module), x, torch.float32, torch.channels_last)
    names = ["output", "input grad", *(n for n, _ in module.named_parameters())]
    for name, a, b in zip(names, channels_last, reference):
        if b.norm() < 1e-8:  # exactly 0 in math (see _check_gradients): fp32 leaves rounding noise
            assert a.norm() < 1e-3, (name, a.norm().item())
        else:
            assert (a - b).norm() < 1e-3 * b.norm(), (name, ((a - b).norm() / b.norm()).item())


@pytest.mark.parametrize("name", sorted(BLOCK_CONVS))
def test_block_conv_dense_aliases_name_dense_shaped_parts(name):
    """What DENSE_ALIASES points at exists and, with default options, has the dense conv's / norm's shapes."""
    cls = BLOCK_CONVS[name]
    module = _build(cls, 16, 16)
    parts = dict(module.named_modules())
    for role, path in cls.DENSE_ALIASES.items():
        assert path in parts, f"{name}: DENSE_ALIASES[{role!r}] = {path!r} is not a submodule"
        expected = (16, 16, 3, 3) if role == "conv" else (16,)
        assert tuple(parts[path].weight.shape) == expected
    assert set(cls.DENSE_ALIASES) <= ({"conv", "norm"} if cls.normalizes_output else {"conv"})


@pytest.mark.parametrize("name", sorted(LOW_LEVEL_FUSIONS))
def test_low_level_fusion_contract(name):
    module = LOW_LEVEL_FUSIONS[name](32, 24, low_channels=8).train()
    high = torch.randn(2, 32, 17, 24, requires_grad=True)
    low = torch.randn(2, 8, 33, 47)
    y = module(high, low)
    assert y.shape == (2, 24, 33, 47) and module.out_channels == 24
    _check_gradients(module, high, y)


def test_every_module_file_is_exported():
    """One concept per file, and every file's module is reachable from models.modules."""
    folder = Path(modules.__file__).parent
    files = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    exported = [getattr(modules, name) for name in modules.__all__]
    defined_in = {obj.__module__.rsplit(".", 1)[-1] for obj in exported if hasattr(obj, "__module__")}
    assert files <= defined_in


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
    assert sum(p.numel() for p in mpm.parameters()) == 4_397_568  # the official MPM's count


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
