"""What a model costs: parameters and FLOPs, counted on the ``meta`` device (shapes, no memory).

So even R101 at 1024x2048 is counted in about a second. FLOPs are those ``utils.profiling.count_flops``
counts: convolutions and matrix products at 2 per multiply-add; norms, activations, pooling and
interpolation count 0.
"""

from __future__ import annotations

import torch
from torch import nn

from models import build_model
from utils.profiling import count_flops


def count_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def inference_flops(model: nn.Module, size: tuple[int, int], device: str | torch.device = "meta") -> int:
    """FLOPs of one inference forward pass (eval mode, no grad) on a 1x3xHxW input."""
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, *size, device=device)
        with torch.no_grad():
            return count_flops(lambda: model(x))
    finally:
        model.train(was_training)


def train_flops_per_image(model: nn.Module, size: tuple[int, int], device: str | torch.device = "meta") -> int:
    """FLOPs of one training image: the forward pass in train mode (aux head included) and the backward.

    Counted on a batch of 2 and halved: BatchNorm after image-level pooling (PPM, ASPP) needs 2 values.
    """
    was_training = model.training
    model.train()
    x = torch.zeros(2, 3, *size, device=device)

    def step() -> None:
        sum(out.sum() for out in model(x).values()).backward()

    try:
        return count_flops(step) // 2
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)


def model_info(cfg, size: tuple[int, int], *, train: bool = False) -> dict:
    """Parameters and inference FLOPs of the model ``cfg`` describes at ``size``; with ``train``, also
    the FLOPs per training image."""
    with torch.device("meta"):
        model = build_model(cfg, load_pretrained=False)
    parts = {name: count_parameters(getattr(model, name)) for name in ("backbone", "head", "aux_head")}
    total = count_parameters(model)
    assert total == sum(parts.values()), "the segmentor has parameters outside backbone/head/aux_head"
    info = {
        "parameters": {"total": total, **parts, "inference": total - parts["aux_head"]},
        "flops": inference_flops(model, size),
        "input_size": list(size),
    }
    if train:
        info["train_flops_per_image"] = train_flops_per_image(model, size)
    return info
