"""Measuring a piece of work: peak memory (CUDA allocator, or the process's resident set on the CPU)
and FLOPs, for scripts/benchmark.py, scripts/compare_official.py and models/complexity.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak: CUDA's max-allocated counter, or Linux's VmHWM (``clear_refs`` 5)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux: the peak then counts from the process start
        pass


def peak_memory_gib(device: torch.device | str) -> float | None:
    """GiB at the peak since ``reset_peak_memory``: tensors on CUDA, the whole process on the CPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return _status_gib("VmHWM:")


def _status_gib(field: str) -> float | None:
    """A kB field of Linux's ``/proc/self/status`` in GiB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return None


def current_memory_gib(device: torch.device | str) -> float | None:
    """GiB in use now: tensors on CUDA (``memory_allocated``), the process's resident set on the CPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**30
    return _status_gib("VmRSS:")


def count_flops(work: Callable[[], object]) -> int:
    """FLOPs of ``work()`` (forward, and backward if it runs one), as PyTorch's counter sees them:
    convolutions and matrix products, 2 per multiply-add; pointwise ops are not counted."""
    with FlopCounterMode(display=False) as counter:
        work()
    return counter.get_total_flops()
