"""utils/optim.py: the poly schedule with warm-up, and the head's LR multiplier."""

from __future__ import annotations

import pytest

from utils.optim import build_optimizer, build_scheduler, lr_factor


def test_lr_factor_formula_at_chosen_iterations():
    kw = dict(max_iters=1000, power=0.9, warmup_iters=100, warmup_ratio=0.1)
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(50, **kw) == pytest.approx((0.1 + 0.9 * 0.5) * (1 - 0.05) ** 0.9)
    assert lr_factor(100, **kw) == pytest.approx((1 - 0.1) ** 0.9)
    assert lr_factor(500, **kw) == pytest.approx(0.5**0.9)
    assert lr_factor(999, **kw) == pytest.approx(0.001**0.9)
    assert lr_factor(1000, **kw) == 0.0


def test_scheduler_and_head_lr_multiplier():
    from conftest import tiny_config
    from models import build_model
    from utils.config import OptimConfig

    model = build_model(tiny_config())
    cfg = OptimConfig(lr=0.01, head_lr_mult=10, warmup_iters=10, warmup_ratio=0.1)
    optimizer = build_optimizer(model, cfg)
    assert [g["name"] for g in optimizer.param_groups] == ["backbone", "heads"]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    scheduler = build_scheduler(optimizer, cfg, max_iters=100)
    for iteration in range(60):
        factor = lr_factor(iteration, max_iters=100, power=0.9, warmup_iters=10, warmup_ratio=0.1)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * factor)
        assert optimizer.param_groups[1]["lr"] == pytest.approx(0.1 * factor)
        optimizer.step()
        scheduler.step()
