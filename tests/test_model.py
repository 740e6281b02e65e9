"""The assembled segmentor: outputs, odd sizes, gradients, norms, precision and memory formats."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config
from models import build_model, build_norm_layer


@pytest.mark.parametrize("shape", [(2, 3, 97, 129), (1, 3, 65, 65)])
def test_eval_returns_logits_at_input_size(shape):
    model = build_model(tiny_config()).eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert set(out) == {"out"}  # the aux head only feeds the training loss
    assert out["out"].shape == (shape[0], 5, *shape[-2:])


@pytest.mark.parametrize("shape", [(2, 3, 97, 129), (2, 3, 65, 65)])
def test_train_mode_gradients_reach_every_parameter(shape):
    model = build_model(tiny_config()).train()
    out = model(torch.randn(shape))
    assert set(out) == {"out", "aux"}
    assert out["aux"].shape == out["out"].shape == (shape[0], 5, *shape[-2:])
    target = torch.randint(0, 5, (shape[0], *shape[-2:]))
    loss = F.cross_entropy(out["out"], target) + 0.4 * F.cross_entropy(out["aux"], target)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_batch_of_one_trains():
    """Batch size 1 trains: every BatchNorm input (strips included) has more than one value per channel."""
    model = build_model(tiny_config()).train()
    out = model(torch.randn(1, 3, 65, 65))
    assert out["out"].shape == out["aux"].shape == (1, 5, 65, 65)
    out["out"].mean().backward()
    grads = [p.grad for p in model.head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_group_norm_model():
    cfg = tiny_config(base_width=16)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, norm="gn", norm_groups=4))
    model = build_model(cfg)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model.eval()(torch.randn(1, 3, 65, 65))["out"].shape == (1, 5, 65, 65)
    with pytest.raises(ValueError, match=r"unknown norm 'ln'; choose from \['bn', 'gn'\]"):
        build_norm_layer("ln")  # from Python: a config's model.norm is checked when it is loaded


def test_channels_last_gives_the_same_logits():
    model = build_model(tiny_config()).eval()
    x = torch.randn(2, 3, 65, 97)
    with torch.no_grad():
        reference = model(x)["out"]
        model = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(
            model(x.to(memory_format=torch.channels_last))["out"], reference, rtol=1e-4, atol=1e-4
        )


def test_bf16_autocast_on_cpu():
    model = build_model(tiny_config()).eval()
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        reference = model(x)["out"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)["out"]
    assert low.dtype == torch.bfloat16
    # same prediction on nearly all pixels; bf16 has 8 bits of mantissa
    assert (low.float().argmax(1) == reference.argmax(1)).float().mean() > 0.9


def test_no_aux_head():
    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, aux_head=None))
    model = build_model(cfg).train()
    assert model.aux_head is None and set(model(torch.randn(2, 3, 33, 33))) == {"out"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_fp16_autocast():
    model = build_model(tiny_config()).cuda().eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        assert model(torch.randn(2, 3, 97, 129, device="cuda"))["out"].shape == (2, 5, 97, 129)


def test_sync_batchnorm_conversion_reaches_every_norm():
    """Multi-GPU training converts BatchNorm to SyncBatchNorm; no BN may hide from the conversion."""
    model = build_model(tiny_config())
    num_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules()) == num_bn > 0
    assert not any(type(m) is torch.nn.BatchNorm2d for m in converted.modules())
