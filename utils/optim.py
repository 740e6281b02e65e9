"""Optimizer and learning-rate schedule of the official recipe.

SGD with momentum and weight decay; the backbone at ``lr``, the heads (SP head and aux head) at
``lr * head_lr_mult`` (10x, as the official code); per-iteration poly decay
``(1 - it / max_iters) ** power`` after an optional linear warmup from ``warmup_ratio * lr``.
"""

from __future__ import annotations

import functools

import torch
from torch import nn


def build_optimizer(model: nn.Module, cfg) -> torch.optim.SGD:
    """``cfg``: the ``optim`` section. Parameter groups: backbone, then heads (10x LR)."""
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    heads = [p for name, p in model.named_parameters() if not name.startswith("backbone.") and p.requires_grad]
    groups = [{"params": backbone, "lr": cfg.lr, "name": "backbone"}]
    if heads:
        groups.append({"params": heads, "lr": cfg.lr * cfg.head_lr_mult, "name": "heads"})
    return torch.optim.SGD(
        groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
    )


def lr_factor(iteration: int, *, max_iters: int, power: float, warmup_iters: int, warmup_ratio: float) -> float:
    """The multiplier of every group's base LR at ``iteration`` (0-based): warmup x poly."""
    poly = (1.0 - min(iteration, max_iters) / max_iters) ** power
    if iteration < warmup_iters:
        return poly * (warmup_ratio + (1.0 - warmup_ratio) * iteration / warmup_iters)
    return poly


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, max_iters: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per iteration; its state (the iteration) is saved in checkpoints."""
    factor = functools.partial(
        lr_factor, max_iters=max_iters, power=cfg.power, warmup_iters=cfg.warmup_iters, warmup_ratio=cfg.warmup_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
