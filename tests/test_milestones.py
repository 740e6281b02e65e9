"""engine/milestones.py and engine/loss_guard.py: which iterations log, save, validate and read the loss."""

from __future__ import annotations

import pytest
import torch

from engine.loss_guard import LossGuard
from engine.milestones import Milestones


@pytest.mark.parametrize("eval_interval", [0, 3])
def test_milestones_equal_the_intervals_and_the_last_iteration(eval_interval):
    m = Milestones(max_iters=10, log_interval=4, checkpoint_interval=5, eval_interval=eval_interval)
    its = range(1, 11)
    assert [i for i in its if m.logs(i)] == [4, 8, 10]
    assert [i for i in its if m.saves(i)] == [5, 10]
    assert [i for i in its if m.validates(i)] == ([3, 6, 9, 10] if eval_interval else [10])
    assert [i for i in its if m.reads_loss(i)] == sorted({4, 8, 10, 5, *([3, 6, 9] if eval_interval else [])})


def test_a_validation_is_owed_only_where_one_was_due_and_did_not_finish():
    m = Milestones(max_iters=10, log_interval=1, checkpoint_interval=1, eval_interval=2)
    assert m.owes_validation(start_iter=4, validated_iter=2)  # stopped in the validation of 4
    assert not m.owes_validation(start_iter=4, validated_iter=4)  # it finished
    assert not m.owes_validation(start_iter=3, validated_iter=2)  # 3 validates nothing
    assert not m.owes_validation(start_iter=0, validated_iter=-1)  # a fresh run
    assert m.owes_validation(start_iter=10, validated_iter=8)  # the final one


def test_loss_guard_remembers_a_non_finite_loss_until_read():
    guard = LossGuard(torch.device("cpu"), start_iter=7)
    guard.add(torch.tensor(1.5))
    assert guard.all_finite(8) and guard.checked_iter == 8
    guard.add(torch.tensor(float("nan")))
    guard.add(torch.tensor(0.3))  # a finite loss after it does not hide it
    assert not guard.all_finite(10) and guard.checked_iter == 8  # the last iteration known to be finite
    inf = LossGuard(torch.device("cpu"), start_iter=0)
    inf.add(torch.tensor(float("inf")))
    assert not inf.all_finite(1)
