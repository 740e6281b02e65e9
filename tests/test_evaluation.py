"""utils/evaluation.py: evaluation over a loader shows its progress on a terminal, and stays quiet in logs."""

from __future__ import annotations

import io
import sys

import torch
from torch import nn

from utils.evaluation import evaluate


class _Constant(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": torch.zeros(x.shape[0], 3, *x.shape[-2:])}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _batches(n: int) -> list[dict[str, torch.Tensor]]:
    return [{"image": torch.zeros(1, 3, 8, 8), "mask": torch.zeros(1, 8, 8, dtype=torch.long)} for _ in range(n)]


def test_progress_bar_with_rate_and_time_left_on_a_terminal(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    matrix, _ = evaluate(_Constant(), _batches(3), 3, torch.device("cpu"), progress=True)
    bar = terminal.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert bar.startswith("evaluating: 100%") and "3/3 [" in bar and "<00:00" in bar and "img/s]" in bar
    assert matrix.matrix[0, 0] == 3 * 64  # the bar changed nothing


def test_no_progress_bar_in_logs_or_when_not_asked(monkeypatch):
    for stream, progress in ((io.StringIO(), True), (_Terminal(), False)):  # a log file; a rank other than 0
        monkeypatch.setattr(sys, "stderr", stream)
        evaluate(_Constant(), _batches(2), 3, torch.device("cpu"), progress=progress)
        assert stream.getvalue() == ""
