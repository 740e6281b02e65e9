"""Which iterations of a run log, save a checkpoint, validate, and read the loss.

The last iteration does all of them. A validation a run owes (a kill or a stop came between its
iteration and the end of the validation) is the first thing the resumed run does.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Milestones:
    max_iters: int
    log_interval: int
    checkpoint_interval: int
    eval_interval: int  # 0: validate only at the end

    @classmethod
    def of(cls, train_config, max_iters: int) -> Milestones:
        t = train_config
        return cls(max_iters, t.log_interval, t.checkpoint_interval, t.eval_interval)

    def logs(self, iteration: int) -> bool:
        return iteration % self.log_interval == 0 or iteration == self.max_iters

    def saves(self, iteration: int) -> bool:
        return iteration % self.checkpoint_interval == 0 or iteration == self.max_iters

    def validates(self, iteration: int) -> bool:
        return iteration == self.max_iters or bool(self.eval_interval and iteration % self.eval_interval == 0)

    def reads_loss(self, iteration: int) -> bool:
        """Where the loop reads the loss (a GPU synchronisation, checked for NaN there): log steps, and
        before anything is saved or validated, so a non-finite loss never reaches a checkpoint."""
        return self.logs(iteration) or self.saves(iteration) or self.validates(iteration)

    def owes_validation(self, start_iter: int, validated_iter: int) -> bool:
        """Whether a run resumed at ``start_iter`` must first finish that iteration's validation."""
        return start_iter > 0 and self.validates(start_iter) and validated_iter < start_iter
