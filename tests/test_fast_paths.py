"""The exact fast paths (utils/fast_paths.py, ``train.fast`` / ``eval.fast``): each must change how the
computation runs, never what it computes. Every test here compares the fast path with the plain one."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import resource
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import train
from conftest import ROOT, tiny_config
from engine.inference import prepare_for_inference
from models import build_model
from models.modules import MixedPooling, StripConv, StripPooling, broadcast_strips, fold_model, pool_strips
from utils.config import ConfigError, FastPaths, config_from_dict, config_to_dict, load_config
from utils.distributed import DistInfo
from utils.evaluation import evaluate
from utils.fast_paths import (
    apply_fast_paths,
    describe_fast_paths,
    reuse_freed_memory,
    use_strip_conv_fast_path,
    use_strip_pool_fast_path,
)
from utils.losses import SegmentationLoss

DEMO = ROOT / "configs/demo.yaml"
CPU, CUDA, META = torch.device("cpu"), torch.device("cuda"), torch.device("meta")


# --- helpers -------------------------------------------------------------------------------------


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    """Within ``tol`` of ``b``'s scale (absolute for values up to 1), as fold_model checks."""
    return _max_diff(a, b) <= tol * max(1.0, b.abs().max().item())


def _spy_conv1d(monkeypatch) -> list[tuple[int, ...]]:
    """Records the input shape of every ``F.conv1d`` call: the strip fast path is the only caller."""
    calls, real = [], F.conv1d

    def spy(x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(F, "conv1d", spy)
    return calls


def _strip_convs(model: nn.Module) -> dict[str, StripConv]:
    return {name: m for name, m in model.named_modules() if isinstance(m, StripConv)}


def _random_stats(model: nn.Module) -> nn.Module:
    """Random BN statistics and affine parameters, so folding is no near-identity; eval mode."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
    return model.eval()


def _tiny_eval_model(seed: int = 0) -> nn.Module:
    """A tiny SPNet (SPM blocks in the backbone, MPM head) in eval mode with non-trivial BN statistics."""
    torch.manual_seed(seed)
    return _random_stats(build_model(tiny_config()))


def _logits(model: nn.Module, x: torch.Tensor, memory_format=torch.contiguous_format) -> torch.Tensor:
    with torch.no_grad():
        return model(x.to(memory_format=memory_format))["out"]


def _seg_batches(sizes, seed: int = 0, num_classes: int = 5) -> list[dict[str, torch.Tensor]]:
    """Batches of one image (1, 3, H, W) and mask (1, H, W), with some ignored (255) pixels."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for h, w in sizes:
        mask = torch.randint(0, num_classes, (1, h, w), generator=gen)
        mask[torch.rand(1, h, w, generator=gen) < 0.1] = 255
        batches.append({"image": torch.randn(1, 3, h, w, generator=gen), "mask": mask})
    return batches


@pytest.fixture
def malloc_defaults():
    """``reuse_freed_memory`` is process-wide: put glibc's thresholds back after the test."""
    yield
    reuse_freed_memory(False)


# --- 1. StripConv --------------------------------------------------------------------------------

QUALIFYING = {  # (3, 1) kernels that take the 1-D path on an (N, C, H, 1) strip
    "plain": dict(padding=(1, 0)),
    "dilation2": dict(padding=(2, 0), dilation=2),
    "stride2": dict(padding=(1, 0), stride=(2, 1)),
    "groups2": dict(padding=(1, 0), groups=2),
}


def _run_conv(conv: nn.Module, x: torch.Tensor, grad_out: torch.Tensor | None = None):
    """Output and gradients (input, weight, bias) for a fixed upstream gradient."""
    conv.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = conv(x)
    out.backward(grad_out if grad_out is not None else torch.ones_like(out))
    return out.detach(), x.grad, conv.weight.grad, None if conv.bias is None else conv.bias.grad


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", QUALIFYING)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_strip_conv_fast_path_equals_the_2d_conv(case, bias, dtype, tol, channels_last, monkeypatch):
    """The 1-D path really runs (spied) and gives the 2-D conv's output, with its strides (a
    non-canonical layout breaks the batch_norm backward after it), and all three gradients."""
    conv = StripConv(8, 8, (3, 1), bias=bias, dtype=dtype, **QUALIFYING[case])
    x = torch.randn(2, 8, 13, 1, dtype=dtype)
    if channels_last:  # CPU training and inference run channels_last by default, weights too
        x, conv = x.to(memory_format=torch.channels_last), conv.to(memory_format=torch.channels_last)
    conv.fast_path = False
    grad_out = torch.randn_like(conv(x))
    plain = _run_conv(conv, x, grad_out)
    calls = _spy_conv1d(monkeypatch)
    conv.fast_path = True
    fast = _run_conv(conv, x, grad_out)
    assert calls == [(2, 8, 13)]  # the fast path ran, once, on the squeezed strip
    assert fast[0].shape == plain[0].shape and fast[0].dtype == dtype
    assert fast[0].stride() == plain[0].stride()
    for name, a, b in zip(("output", "input grad", "weight grad", "bias grad"), fast, plain):
        if b is None:
            assert a is None and not bias, name
            continue
        assert _max_diff(a, b) <= tol, f"{name}: {_max_diff(a, b):.3g}"


NOT_QUALIFYING = {  # (conv arguments, input shape): the ordinary 2-D conv must run, unchanged
    "width5": (dict(kernel_size=(3, 1), padding=(1, 0)), (2, 8, 13, 5)),
    "kernel1x3": (dict(kernel_size=(1, 3), padding=(0, 1)), (2, 8, 13, 1)),
    "width_padding": (dict(kernel_size=(3, 1), padding=(1, 1)), (2, 8, 13, 1)),
    "reflect": (dict(kernel_size=(3, 1), padding=(1, 0), padding_mode="reflect"), (2, 8, 13, 1)),
    "same": (dict(kernel_size=(3, 1), padding="same"), (2, 8, 13, 1)),
}


@pytest.mark.parametrize("case", NOT_QUALIFYING)
def test_strip_conv_other_inputs_are_the_plain_conv2d(case, monkeypatch):
    """Anything but a zero-padded (k, 1) conv of a width-1 strip is nn.Conv2d, bit for bit."""
    kwargs, shape = NOT_QUALIFYING[case]
    strip = StripConv(8, 8, **kwargs)
    plain = nn.Conv2d(8, 8, **kwargs)
    plain.load_state_dict(strip.state_dict())
    x = torch.randn(shape)
    calls = _spy_conv1d(monkeypatch)
    out_strip, *grads_strip = _run_conv(strip, x)
    out_plain, *grads_plain = _run_conv(plain, x)
    assert calls == []
    assert torch.equal(out_strip, out_plain)
    assert all(torch.equal(a, b) for a, b in zip(grads_strip, grads_plain))


def test_strip_conv_state_dict_is_a_conv2d_state_dict():
    """Checkpoints stay interchangeable: same keys and shapes, ``fast_path`` is not saved."""
    for bias in (True, False):
        strip = StripConv(8, 6, (3, 1), padding=(1, 0), bias=bias)
        plain = nn.Conv2d(8, 6, (3, 1), padding=(1, 0), bias=bias)
        assert {k: v.shape for k, v in strip.state_dict().items()} == {
            k: v.shape for k, v in plain.state_dict().items()
        }
        plain.load_state_dict(strip.state_dict(), strict=True)
        strip.load_state_dict(plain.state_dict(), strict=True)


# --- 2. StripConv in SPNet -----------------------------------------------------------------------


def test_strip_conv_fast_path_in_spnet_training_and_folding(monkeypatch):
    """Both users (SPM in the backbone, MPM in the head) switch; training logits and every gradient
    are unchanged; folding keeps the StripConv class and its switch."""
    torch.manual_seed(0)
    model = build_model(tiny_config()).train()
    strips = _strip_convs(model)
    assert any(n.startswith("backbone.") for n in strips) and any(n.startswith("head.") for n in strips)
    assert all(s.bias is None for s in strips.values())  # each followed by a BN
    x, target = torch.randn(2, 3, 65, 65), torch.randint(0, 5, (2, 65, 65))
    calls = _spy_conv1d(monkeypatch)
    results = {}
    for fast in (False, True):
        m = copy.deepcopy(model)
        assert use_strip_conv_fast_path(m, fast) == len(strips)
        assert all(s.fast_path is fast for s in _strip_convs(m).values())
        calls.clear()
        torch.manual_seed(1)  # the same dropout masks
        out = m(x)
        (F.cross_entropy(out["out"], target) + 0.4 * F.cross_entropy(out["aux"], target)).backward()
        assert len(calls) == (len(strips) if fast else 0)
        results[fast] = out, {n: p.grad for n, p in m.named_parameters()}
    (out_fast, grads_fast), (out_plain, grads_plain) = results[True], results[False]
    for key in ("out", "aux"):
        assert _close(out_fast[key], out_plain[key], 1e-5), (key, _max_diff(out_fast[key], out_plain[key]))
    assert grads_fast.keys() == grads_plain.keys()
    for name, grad in grads_plain.items():
        assert grad is not None and _close(grads_fast[name], grad, 1e-5), (name, _max_diff(grads_fast[name], grad))

    for fast in (False, True):
        m = _random_stats(copy.deepcopy(model))
        use_strip_conv_fast_path(m, fast)
        fold_model(m, torch.randn(1, 3, 64, 64))
        folded = [m.get_submodule(name) for name in strips]
        assert all(type(s) is StripConv and s.fast_path is fast for s in folded)
        assert all(s.bias is not None for s in folded)  # really folded: the trained strip convs have no bias


# --- 2b. Strip pooling (pool_strips, broadcast_strips) -------------------------------------------


def _spy(monkeypatch, name: str) -> list[tuple[int, ...]]:
    """Records the input shape of every ``F.<name>`` call."""
    calls, real = [], getattr(F, name)

    def spy(x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(F, name, spy)
    return calls


def _strip_pooling(x: torch.Tensor, fast: bool, strip_nchw: bool):
    """pool -> (a stand-in for the strip convs) -> broadcast, its output and input gradient."""
    x = x.detach().clone().requires_grad_(True)
    pooled_h, pooled_w = pool_strips(x, fast)
    strip_h, strip_w = pooled_h * 1.5, pooled_w - 0.25
    if strip_nchw:  # as the 1-D strip conv returns it
        strip_h = strip_h.contiguous()
    out = broadcast_strips(strip_h, strip_w, x, fast)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out.dtype)
    out.backward(grad_out)
    return pooled_h.detach(), pooled_w.detach(), out.detach(), x.grad


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)], ids=["f32", "bf16"])
@pytest.mark.parametrize("strip_nchw", [False, True], ids=["nhwc-strip", "nchw-strip"])
@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("shape", [(2, 16, 13, 7), (1, 8, 32, 32), (3, 5, 1, 9)])
def test_strip_pool_fast_path_equals_mean_and_expand(shape, channels_last, strip_nchw, dtype, tol, monkeypatch):
    """Pooled strips, their broadcast sum and the input gradient equal the plain mean + expand; the
    NHWC kernels run exactly when the map is channels_last, and keep it channels_last."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    pools, spreads = _spy(monkeypatch, "adaptive_avg_pool2d"), _spy(monkeypatch, "interpolate")
    plain = _strip_pooling(x, False, strip_nchw)
    assert pools == spreads == []
    fast = _strip_pooling(x, True, strip_nchw)
    nhwc = channels_last and x.is_contiguous(memory_format=torch.channels_last)  # (3, 5, 1, 9) is both
    assert len(pools) == len(spreads) == (2 if nhwc else 0)
    for a, b in zip(fast, plain):
        assert a.dtype == b.dtype and _close(a, b, tol), _max_diff(a, b)
    if nhwc:
        assert fast[2].is_contiguous(memory_format=torch.channels_last)
        assert fast[3].is_contiguous(memory_format=torch.channels_last)


def _spnet_training_step(dtype, memory_format, strip_conv: bool, strip_pool: bool):
    """Logits and every gradient of one training step of a tiny SPNet, with the two strip fast paths."""
    torch.manual_seed(0)
    model = build_model(tiny_config()).train().to(dtype).to(memory_format=memory_format)
    pooling = [m for m in model.modules() if isinstance(m, (StripPooling, MixedPooling))]
    assert any(isinstance(m, StripPooling) for m in pooling) and any(isinstance(m, MixedPooling) for m in pooling)
    assert use_strip_pool_fast_path(model, strip_pool) == len(pooling)
    assert use_strip_conv_fast_path(model, strip_conv) == len(_strip_convs(model))
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 65, 65, generator=gen).to(dtype).contiguous(memory_format=memory_format)
    target = torch.randint(0, 5, (2, 65, 65), generator=gen)
    torch.manual_seed(1)  # the same dropout masks
    out = model(x)
    (F.cross_entropy(out["out"], target) + 0.4 * F.cross_entropy(out["aux"], target)).backward()
    return out["out"].detach(), {n: p.grad for n, p in model.named_parameters()}, len(pooling)


@pytest.fixture(scope="module")
def float64_spnet_step():
    return _spnet_training_step(torch.float64, torch.contiguous_format, strip_conv=False, strip_pool=False)


@pytest.mark.parametrize("strip_pool", [True, False], ids=["pool-fast", "pool-plain"])
@pytest.mark.parametrize("strip_conv", [True, False], ids=["conv-fast", "conv-plain"])
@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc", "nchw"])
def test_strip_fast_paths_in_spnet_training_match_float64(
    channels_last, strip_conv, strip_pool, float64_spnet_step, monkeypatch
):
    """Every combination of the strip conv and strip pooling fast paths, NCHW and channels_last,
    gives the float64 plain step's logits and gradients up to fp32 rounding. (Pinned: the strip conv's
    channels_last output once had strides that PyTorch's CPU batch_norm backward misreads, and
    channels_last SPNet training got gradients 100% off in the SPM and MPM.) The strip pooling's NHWC
    kernels run exactly when the model runs channels_last with the fast path on."""
    pools = _spy(monkeypatch, "adaptive_avg_pool2d")  # MPM's square grids call it too
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    logits, grads, n_pooling = _spnet_training_step(torch.float32, memory_format, strip_conv, strip_pool)
    ref_logits, ref_grads, _ = float64_spnet_step
    square_grid_calls = 2 * 2  # MPM: two grids, forward only, in each of the tiny SPNet's two MPMs
    assert len(pools) == square_grid_calls + (2 * n_pooling if channels_last and strip_pool else 0)
    assert _close(logits, ref_logits, 1e-4), _max_diff(logits, ref_logits)
    assert grads.keys() == ref_grads.keys()
    for name, ref in ref_grads.items():
        # fp32 rounding flips the odd ReLU mask element of the tiny net: up to 1.6e-2; the misread: 2.8
        error = ((grads[name].double() - ref).norm() / ref.norm()).item()
        assert error < 0.1, (name, error)


# --- 3. reuse_freed_memory ----------------------------------------------------------------------


def _two_training_steps() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = build_model(tiny_config()).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, target = torch.randn(2, 3, 65, 65), torch.randint(0, 5, (2, 65, 65))
    losses = []
    for _ in range(2):
        out = model(x)
        loss = F.cross_entropy(out["out"], target) + 0.4 * F.cross_entropy(out["aux"], target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return torch.stack(losses), model.state_dict()


def _minor_faults_per_alloc(nbytes: int, warm_up: int = 10, repeats: int = 5) -> float:
    """Page faults of allocating, touching and freeing ``nbytes``, in the steady state: glibc carves
    small allocations out of the freed block, so it takes a few rounds until a freed block fits (7 here)."""
    for i in range(warm_up + repeats):
        if i == warm_up:
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(nbytes, dtype=torch.uint8).fill_(1)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / repeats


def test_reuse_freed_memory_changes_nothing_but_page_faults(malloc_defaults):
    """Bit-identical training with it on and off; on, a freed 64 MiB block (above glibc's largest
    dynamic mmap threshold, 32 MiB) is reused without faulting its pages in again."""
    assert reuse_freed_memory(False) is True
    losses_off, weights_off = _two_training_steps()
    assert reuse_freed_memory(True) is True  # glibc Linux: it applies
    losses_on, weights_on = _two_training_steps()
    assert torch.equal(losses_on, losses_off) and torch.isfinite(losses_on).all()
    assert weights_on.keys() == weights_off.keys()
    assert all(torch.equal(weights_on[k], weights_off[k]) for k in weights_off)

    pages = 64 * 2**20 // resource.getpagesize()
    faults_on = _minor_faults_per_alloc(64 * 2**20)
    reuse_freed_memory(False)
    faults_off = _minor_faults_per_alloc(64 * 2**20)  # every page again, or a few huge pages under THP
    assert faults_on < 0.02 * pages, f"on: {faults_on:.0f} faults per alloc of {pages} pages (off: {faults_off:.0f})"


ALL_ON, ALL_OFF = FastPaths(), FastPaths(**{f.name: False for f in dataclasses.fields(FastPaths)})


# --- 4. channels_last -----------------------------------------------------------------------------


@pytest.mark.parametrize("device", [CPU, CUDA, torch.device("mps")], ids=["cpu", "cuda", "mps"])
@pytest.mark.parametrize("on", [True, False], ids=["fast", "plain"])
def test_apply_fast_paths_channels_last_truth_table(device, on, malloc_defaults):
    """``fast.channels_last`` on: NHWC on CUDA and CPU, NCHW elsewhere; off: NCHW everywhere. The
    model's weights follow the returned input format; the strip switches follow the section."""
    model = _tiny_eval_model()
    fast = dataclasses.replace(ALL_ON if on else ALL_OFF, reuse_memory=False)
    for name in ("device", "type"):
        memory_format = apply_fast_paths(model, fast, device if name == "device" else device.type)
        expected = on and device.type in ("cuda", "cpu")
        assert memory_format == (torch.channels_last if expected else torch.contiguous_format)
        conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=memory_format)
    assert all(s.fast_path is on for s in _strip_convs(model).values())


def test_describe_fast_paths_in_words():
    """Logs and results say which paths are on, never the dataclass's repr."""
    assert describe_fast_paths(ALL_ON) == "all on"
    assert describe_fast_paths(ALL_OFF) == "all off (the plain path)"
    assert describe_fast_paths(dataclasses.replace(ALL_ON, strip_conv=False, fold_bn=False)) == (
        "on except strip_conv, fold_bn"
    )


# --- 5. Config ------------------------------------------------------------------------------------


def test_fast_config_switches():
    """A bare bool stands for every field; later dotted overrides and other sections are kept apart."""
    assert ALL_ON == FastPaths(True, True, True, True, True, True)
    cfg = load_config(DEMO)
    assert cfg.train.fast == cfg.eval.fast == ALL_ON
    assert cfg.eval.compile is False and not hasattr(cfg.train, "channels_last")

    cfg = load_config(DEMO, ["train.fast=false"])
    assert cfg.train.fast == ALL_OFF and cfg.eval.fast == ALL_ON
    cfg = load_config(DEMO, ["train.fast=false", "train.fast.strip_conv=true"])
    assert cfg.train.fast == dataclasses.replace(ALL_OFF, strip_conv=True)
    cfg = load_config(DEMO, ["eval.fast.fold_bn=false"])
    assert cfg.eval.fast == dataclasses.replace(ALL_ON, fold_bn=False) and cfg.train.fast == ALL_ON
    cfg = load_config(DEMO, ["train.fast={strip_conv: false}"])  # a mapping merges into the defaults
    assert cfg.train.fast == dataclasses.replace(ALL_ON, strip_conv=False)


def test_fast_config_from_yaml_and_round_trip(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text(f"_base_: {DEMO}\ntrain:\n  fast: false\neval:\n  fast: {{fold_bn: false}}\n")
    cfg = load_config(path)
    assert cfg.train.fast == ALL_OFF
    assert cfg.eval.fast == dataclasses.replace(ALL_ON, fold_bn=False)
    assert config_to_dict(cfg)["train"]["fast"] == dataclasses.asdict(ALL_OFF)
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg and isinstance(again.train.fast, FastPaths) and isinstance(again.eval.fast, FastPaths)


@pytest.mark.parametrize(
    "override, message",
    [
        pytest.param(
            "train.fast=3", r"train.fast = 3 must be true, false or a mapping of reuse_memory, strip_conv", id="number"
        ),
        pytest.param("eval.fast=[1]", r"eval.fast = \[1\] must be true, false or a mapping", id="list"),
        pytest.param(
            "train.fast.strp_conv=false", r"unknown key 'train.fast.strp_conv'; did you mean 'strip_conv'\?", id="typo"
        ),
        pytest.param("train.fast.strip_conv=3", r"train.fast.strip_conv = 3 must be true or false", id="field"),
    ],
)
def test_fast_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO, [override])


def test_the_removed_channels_last_keys_name_their_replacement(tmp_path):
    """One key per switch: ``train.fast.channels_last``; the old top-level key says so, as an override or in a file."""
    with pytest.raises(ConfigError, match=r"train.channels_last is gone; train.fast.channels_last \(true / false\)"):
        load_config(DEMO, ["train.channels_last=true"])
    path = tmp_path / "old.yaml"
    path.write_text(f"_base_: {DEMO}\neval:\n  channels_last: false\n")
    with pytest.raises(ConfigError, match=r"old.yaml: eval.channels_last is gone; eval.fast.channels_last"):
        load_config(path)


# --- 6. No host synchronisation in the training step ----------------------------------------------


def _meta_run(criterion=None) -> types.SimpleNamespace:
    """What ``train_step`` reads of a ``train.Run``, with the tiny model on the meta device."""
    with META:
        model = build_model(tiny_config()).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return types.SimpleNamespace(
        dist=DistInfo(device=META),
        model=model,
        micro=2,
        accum=2,
        memory_format=torch.contiguous_format,
        amp_dtype=None,
        criterion=criterion or SegmentationLoss("ce", aux_weight=0.4),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 - i / 100),
    )


def _cpu_batches(accum: int = 2) -> list[dict[str, torch.Tensor]]:
    return [{"image": torch.randn(2, 3, 33, 33), "mask": torch.randint(0, 5, (2, 33, 33))} for _ in range(accum)]


@pytest.fixture
def autocast_off_on_meta(monkeypatch):
    """``torch.autocast("meta", enabled=False)`` refuses the device type ("unsupported scalarType")
    although a disabled autocast does nothing; only that call becomes a null context."""
    real = torch.autocast

    def autocast(device_type, *args, enabled=True, **kwargs):
        if device_type == "meta" and not enabled:
            return contextlib.nullcontext()
        return real(device_type, *args, enabled=enabled, **kwargs)

    monkeypatch.setattr(torch, "autocast", autocast)


def test_train_step_never_reads_a_device_tensor_on_the_host(autocast_off_on_meta):
    """The whole step (transfer, normaliser, forward, loss, backward, optimizer, scheduler) on the
    meta device, whose tensors have no data: every host read of a device tensor (``.item()``,
    ``.tolist()``, ``bool()`` / ``float()`` / ``int()``, ``.cpu()``, ``if t:``, data-dependent shapes
    such as ``nonzero`` or boolean-mask indexing) raises there, so a step that finishes read none.
    This is stronger than patching ``Tensor.item`` & co. on the CPU, which would miss the reads that
    go through other doors (``.cpu()``, ``.numpy()``, ``nonzero``, C++ ``.item()`` calls). The stop
    flag stays a CPU tensor, as it is meant to. Not covered: GradScaler's own check with fp16."""
    run = _meta_run()
    step, stop_now = train.train_step(run, _cpu_batches(), types.SimpleNamespace(requested=False))
    assert step.shape == (3,) and step.device == META and stop_now is False
    params = [p for p in run.model.parameters() if p.requires_grad]
    assert all(p.grad is None for p in params)  # the step zeroed them ...
    momentum = [run.optimizer.state[p].get("momentum_buffer") for p in params]
    assert all(m is not None and m.device == META for m in momentum)  # ... after the SGD step
    assert run.scheduler.last_epoch == 1

    _, stop_now = train.train_step(run, _cpu_batches(), types.SimpleNamespace(requested=True))
    assert stop_now is True  # agreed on the host, without a device tensor

    # The harness has teeth: the reads a step must not make raise on what it returned ...
    for read in (lambda: step[0].item(), lambda: step.tolist(), lambda: bool(torch.isfinite(step[0]))):
        with pytest.raises(RuntimeError):  # NotImplementedError (.tolist) is one too
            read()

    # ... and inside the step: a criterion that reads the normaliser on the host fails the step.
    loss = SegmentationLoss("ce", aux_weight=0.4)

    def leaky(outputs, target, normalizer):
        return loss(outputs, target, float(normalizer))

    with pytest.raises(RuntimeError, match="meta"):
        train.train_step(_meta_run(leaky), _cpu_batches(), types.SimpleNamespace(requested=False))


def test_train_step_with_ohem_never_reads_a_device_tensor_on_the_host(autocast_off_on_meta):
    """OHEM picks its pixels on the device too (k-th probability, threshold, kept mean): the same
    meta-device step with ``loss.type=ohem`` and a min_kept that applies."""
    run = _meta_run(SegmentationLoss("ohem", ohem_thresh=0.7, ohem_min_kept=100, aux_weight=0.4))
    step, stop_now = train.train_step(run, _cpu_batches(), types.SimpleNamespace(requested=False))
    assert step.shape == (3,) and step.device == META and stop_now is False
    assert run.scheduler.last_epoch == 1


# --- 7. evaluate(inference_mode=...) --------------------------------------------------------------


def test_evaluate_inference_mode_equals_no_grad():
    """Same confusion matrix both ways; the model really ran under inference_mode; the matrix is
    an ordinary tensor that can be reduced, updated and computed afterwards."""
    model = _tiny_eval_model()
    batches = _seg_batches([(48, 64), (64, 64), (40, 56)])
    seen = []
    model.register_forward_pre_hook(lambda *_: seen.append(torch.is_inference_mode_enabled()))
    fast, _ = evaluate(model, batches, 5, CPU, inference_mode=True)
    plain, _ = evaluate(model, batches, 5, CPU, inference_mode=False)
    assert seen == [True] * 3 + [False] * 3
    assert torch.equal(fast.matrix, plain.matrix)
    assert fast.matrix.sum().item() == sum(int((b["mask"] != 255).sum()) for b in batches)
    assert not fast.matrix.is_inference()
    fast.all_reduce()
    fast.matrix += 0  # in place, outside inference mode: raises for an inference tensor
    assert fast.compute() == plain.compute()


# --- 8. prepare_for_inference ---------------------------------------------------------------------


def test_prepare_for_inference_default_and_plain(malloc_defaults):
    """The default eval section folds, switches the strip convs on and runs channels_last on the CPU,
    with the unprepared model's logits; ``eval.fast=false`` leaves the model as trained."""
    model = _tiny_eval_model()
    x = torch.randn(2, 3, 64, 80)
    reference = _logits(model, x)
    eval_cfg = tiny_config().eval

    prepared = prepare_for_inference(copy.deepcopy(model), eval_cfg.fast, CPU, compile=eval_cfg.compile)
    assert "folded" in prepared.summary and prepared.channels_last is True
    assert prepared.memory_format == torch.channels_last
    inference_path = (prepared.model.backbone, prepared.model.head)  # the aux head only feeds the training loss
    assert not any(isinstance(m, _BatchNorm) for part in inference_path for m in part.modules())
    assert all(s.fast_path for s in _strip_convs(prepared.model).values())
    out = _logits(prepared.model, x, prepared.memory_format)
    assert _close(out, reference, 1e-4), _max_diff(out, reference)

    plain_cfg = dataclasses.replace(eval_cfg, fast=ALL_OFF)
    plain = prepare_for_inference(copy.deepcopy(model), plain_cfg.fast, CPU, compile=plain_cfg.compile)
    assert "folding: off" in plain.summary and plain.channels_last is False
    assert sum(isinstance(m, _BatchNorm) for m in plain.model.modules()) == sum(
        isinstance(m, _BatchNorm) for m in model.modules()
    )
    assert not any(s.fast_path for s in _strip_convs(plain.model).values())
    out = _logits(plain.model, x)
    assert _close(out, reference, 1e-5), _max_diff(out, reference)


# --- 9. bf16 autocast (a looser comparison: bf16 is not an exact fast path) -----------------------


def test_bf16_autocast_inference_on_cpu_stays_close():
    """bf16 keeps 8 bits of mantissa (relative step 2^-8 = 0.4%); measured on this tiny model over
    seeds 0-3: max |logit difference| 0.7-0.9% of max |logit|, argmax agreement >= 99.7%. Bounds:
    3% and 95%."""
    model = _tiny_eval_model()
    x = torch.randn(2, 3, 64, 64)
    reference = _logits(model, x)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x)["out"]
    assert low.dtype == torch.bfloat16
    diff, scale = _max_diff(low, reference), reference.abs().max().item()
    agree = (low.float().argmax(1) == reference.argmax(1)).float().mean().item()
    assert diff <= 0.03 * scale, f"max diff {diff:.4g} = {diff / scale:.2%} of max |logit| {scale:.4g}"
    assert agree >= 0.95, f"argmax agrees on {agree:.2%} of pixels (max diff {diff:.4g})"


# --- 10. torch.compile for inference --------------------------------------------------------------


@pytest.mark.slow
def test_eval_compile_gives_the_eager_logits(malloc_defaults):
    """``eval.compile=true`` (after folding and channels_last): Inductor's logits equal eager's."""
    model = _tiny_eval_model()
    x = torch.randn(1, 3, 64, 64)
    reference = _logits(model, x)
    eval_cfg = dataclasses.replace(tiny_config().eval, compile=True)
    prepared = prepare_for_inference(copy.deepcopy(model), eval_cfg.fast, CPU, compile=eval_cfg.compile)
    assert "compile True" in prepared.summary and isinstance(prepared.model, torch._dynamo.eval_frame.OptimizedModule)
    with torch.inference_mode():
        out = prepared.model(x.to(memory_format=prepared.memory_format))["out"]
    assert _close(out, reference, 1e-4), _max_diff(out, reference)
