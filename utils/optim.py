"""Optimizer and learning-rate schedule of the official recipe.

SGD with momentum and weight decay; the backbone at ``lr``, the heads (SP head and aux head) at
``lr * head_lr_mult`` (10x, as the official code), parameters matched by ``custom_lr_mults``
(e.g. block attention trained from scratch inside the backbone) at their own multiple; poly decay
``(1 - it / max_iters) ** power`` every iteration, after an optional linear warmup from
``warmup_ratio * lr``.
"""

from __future__ import annotations

import functools

import torch
from torch import nn


def build_optimizer(model: nn.Module, cfg) -> torch.optim.SGD:
    """``cfg``: the ``optim`` section. Groups: backbone (lr), heads (lr x head_lr_mult), then one
    group per ``custom_lr_mults`` key for the parameters whose name contains it (longest key wins)."""
    keys = sorted(cfg.custom_lr_mults, key=len, reverse=True)
    groups: dict[str, dict] = {
        "backbone": {"params": [], "lr": cfg.lr},
        "heads": {"params": [], "lr": cfg.lr * cfg.head_lr_mult},
        **{f"custom:{k}": {"params": [], "lr": cfg.lr * cfg.custom_lr_mults[k]} for k in keys},
    }
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = next((k for k in keys if k in name), None)
        group = f"custom:{key}" if key is not None else "backbone" if name.startswith("backbone.") else "heads"
        groups[group]["params"].append(param)
    unused = [k for k in keys if not groups[f"custom:{k}"]["params"]]
    if unused:
        raise ValueError(
            f"optim.custom_lr_mults: {unused} match no parameter name (names look like "
            f"'backbone.layer4.0.attention.fuse.weight', 'head.context.0.project.0.weight')"
        )
    param_groups = [{"name": name, **group} for name, group in groups.items() if group["params"]]
    return torch.optim.SGD(
        param_groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
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
