"""Activation checkpointing (models/recompute.py; ``model.backbone.checkpoint_stages``, ``model.checkpoint_heads``):
a checkpointed training step must be the plain step, to the bit, in its outputs, its gradients, its
BatchNorm statistics and its dropout masks, and must store fewer activations."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models.recompute
from conftest import tiny_config
from models import build_model
from models.backbones import ResNet
from utils.config import ConfigError, load_config
from utils.fast_paths import apply_fast_paths

PARTS = {  # (checkpoint_stages, checkpoint_heads)
    "stages-3-4-and-heads": ((3, 4), True),
    "every-stage": ((1, 2, 3, 4), False),
    "heads-only": ((), True),
}


def _checkpointed_config(stages: tuple[int, ...], heads: bool, **model):
    cfg = tiny_config()
    backbone = dataclasses.replace(cfg.model.backbone, checkpoint_stages=stages)
    model_cfg = dataclasses.replace(cfg.model, backbone=backbone, checkpoint_heads=heads, **model)
    return dataclasses.replace(cfg, model=model_cfg)


def _model(cfg, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)  # the same weights whatever is checkpointed
    return build_model(cfg).to(dtype).train()


def _step(model: nn.Module, x: torch.Tensor, seed: int = 1) -> tuple[dict, dict, dict, torch.Tensor]:
    """One forward (train mode, dropout on) + backward from the RNG state ``seed``: outputs, gradients,
    buffers (BatchNorm statistics) and the RNG state afterwards."""
    torch.manual_seed(seed)
    target = torch.randint(0, 5, (x.shape[0], *x.shape[2:]))
    outputs = model(x)
    loss = F.cross_entropy(outputs["out"], target) + 0.4 * F.cross_entropy(outputs["aux"], target)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    return {k: v.detach() for k, v in outputs.items()}, grads, buffers, torch.get_rng_state()


def _assert_same_step(a, b) -> None:
    for part_a, part_b, what in zip(a[:3], b[:3], ("output", "gradient", "buffer")):
        assert part_a.keys() == part_b.keys()
        for name in part_a:
            assert torch.equal(part_a[name], part_b[name]), f"{what} {name}"
    assert torch.equal(a[3], b[3]), "the RNG state after the step"


@pytest.mark.parametrize("stages, heads", PARTS.values(), ids=PARTS.keys())
def test_a_checkpointed_step_is_the_plain_step_in_float64(stages, heads):
    """Same outputs, gradients of every parameter, BatchNorm running mean / var / num_batches_tracked (once
    per step, not twice: the recomputation runs in train mode) and dropout masks (replayed), to the bit."""
    x = torch.randn(2, 3, 65, 97, dtype=torch.float64)
    plain = _step(_model(tiny_config()), x)
    checkpointed = _step(_model(_checkpointed_config(stages, heads)), x)
    _assert_same_step(plain, checkpointed)
    tracked = [b for name, b in checkpointed[2].items() if name.endswith("num_batches_tracked")]
    assert len(tracked) > 40 and all(n.item() == 1 for n in tracked)
    other_masks = _step(_model(tiny_config()), x, seed=2)  # dropout is live: another seed, other outputs
    assert not torch.equal(plain[0]["out"], other_masks[0]["out"])


def test_two_steps_with_sgd_and_the_fast_paths_in_fp32_channels_last():
    """The training setting: fp32, channels_last and the exact fast paths, two SGD steps (the second
    starts from the first's statistics): the same weights and statistics as without checkpointing."""
    results = []
    for cfg in (tiny_config(), _checkpointed_config((1, 2, 3, 4), True)):
        model = _model(cfg, torch.float32)
        memory_format = apply_fast_paths(model, dataclasses.replace(cfg.train.fast, reuse_memory=False), "cpu")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = torch.randn(2, 3, 65, 97).contiguous(memory_format=memory_format)
        for seed in (1, 2):
            _step(model, x, seed)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        results.append(model.state_dict())
    plain, checkpointed = results
    for name, value in plain.items():
        assert torch.equal(value, checkpointed[name]), name


def test_checkpointing_runs_only_in_training_with_gradients(monkeypatch):
    """One segment per block of the chosen stages and one per head in a training forward; none in eval
    mode or under no_grad, where there is no backward pass to save memory for."""
    calls = []
    real = models.recompute.checkpoint

    def spy(module, *args, **kwargs):
        calls.append(type(module).__name__)
        return real(module, *args, **kwargs)

    monkeypatch.setattr(models.recompute, "checkpoint", spy)
    model = _model(_checkpointed_config((3, 4), True), torch.float32)
    x = torch.randn(2, 3, 33, 47)
    model(x)
    assert calls == ["Bottleneck"] * (2 + 3) + ["SPHead", "FCNHead"]  # tiny_config: stages of 1, 1, 2, 3 blocks
    calls.clear()
    with torch.no_grad():
        model(x)
    model.eval()
    model(x)
    assert calls == []


def _saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass, during one training forward."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x)
    return total


def test_checkpointing_keeps_fewer_activations():
    """What the forward pass keeps for the backward: the checkpointed parts keep only their inputs."""
    x = torch.randn(2, 3, 129, 129)
    plain = _saved_bytes(_model(tiny_config(), torch.float32), x)
    stages = _saved_bytes(_model(_checkpointed_config((3, 4), False), torch.float32), x)
    everything = _saved_bytes(_model(_checkpointed_config((1, 2, 3, 4), True), torch.float32), x)
    assert everything < stages < plain
    assert everything < 0.5 * plain


def test_group_norm_and_the_recomputation_under_autocast():
    """No BatchNorm (GroupNorm): nothing to restore. bf16 autocast: the recomputation runs under the
    forward's autocast state (torch.utils.checkpoint keeps it), so the step is again the plain one."""
    cfg = dataclasses.replace(tiny_config(), model=dataclasses.replace(tiny_config().model, norm="gn", norm_groups=4))
    checkpointed = _checkpointed_config((1, 2, 3, 4), True, norm="gn", norm_groups=4)
    x = torch.randn(2, 3, 65, 97)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = _step(_model(cfg, torch.float32), x)
        ours = _step(_model(checkpointed, torch.float32), x)
    _assert_same_step(plain, ours)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return models.recompute.recomputed(self.body, x) if models.recompute.should_recompute(self) else self.body(x)


@pytest.mark.slow
def test_under_torch_compile_the_statistics_update_once():
    """torch.compile accepts no context_fn: it recomputes in its own backward graph, where BatchNorm's
    running statistics are updated once (about 20 s of compiling on 2 CPU cores)."""
    torch.manual_seed(0)
    eager = _Block()
    compiled_block = copy.deepcopy(eager)
    compiled = torch.compile(compiled_block)
    x = torch.randn(2, 4, 9, 11)
    for model in (eager, compiled):
        torch.manual_seed(1)
        model(x).square().mean().backward()
    norm, compiled_norm = eager.body[1], compiled_block.body[1]
    assert norm.num_batches_tracked.item() == compiled_norm.num_batches_tracked.item() == 1
    torch.testing.assert_close(compiled_norm.running_mean, norm.running_mean)
    torch.testing.assert_close(compiled_norm.running_var, norm.running_var)
    assert compiled_block.body[0].weight.grad is not None


def test_config_and_constructor_refuse_stages_that_do_not_exist(tmp_path):
    def config(text: str):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        return load_config(path)

    with pytest.raises(ConfigError, match=r"model.backbone.checkpoint_stages\[1\] = 5 must be >= 1 and <= 4 \(ResNet"):
        config("model: {backbone: {checkpoint_stages: [3, 5]}}")
    with pytest.raises(ConfigError, match="unknown key 'model.checkpoint_head'; did you mean 'checkpoint_heads'"):
        config("model: {checkpoint_head: true}")
    with pytest.raises(ValueError, match=r"checkpoint_stages are ResNet stages 1-4, got \[0\]"):
        ResNet(18, checkpoint_stages=[0])
    cfg = config("model: {checkpoint_heads: true, backbone: {depth: 18, multi_grid: null, checkpoint_stages: [4, 3]}}")
    model = build_model(cfg, load_pretrained=False)
    assert model.backbone.checkpoint_stages == (3, 4) and model.checkpoint_heads
