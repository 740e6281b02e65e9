"""Stop a run whose loss became NaN or infinite before the bad weights reach a checkpoint.

Reading a loss on the host waits for the GPU, so the step's losses are only and-ed together on the
device; the loop reads the result where it synchronises anyway (``Milestones.reads_loss``).
"""

from __future__ import annotations

import torch


class LossGuard:
    def __init__(self, device: torch.device, start_iter: int) -> None:
        self.finite = torch.ones((), dtype=torch.bool, device=device)  # every loss since the last read
        self.checked_iter = start_iter  # the newest iteration known to be finite

    def add(self, loss: torch.Tensor) -> None:
        """Record a step's loss, on the device (no synchronisation)."""
        self.finite &= torch.isfinite(loss)

    def all_finite(self, iteration: int) -> bool:
        """Whether every loss up to ``iteration`` was finite (reads the device)."""
        if not self.finite.item():
            return False
        self.checked_iter = iteration
        return True
