"""Stopping a run cleanly: on a signal or a stop file, finish the iteration, save, and exit.

How the requests arrive (docs/training.md, "Preemption"):

- SLURM's time-limit warning, ``#SBATCH --signal=B:USR1@<seconds>``, reaches the batch script
  only; ``scripts/slurm_train.sh`` then writes the stop file that every training process polls
  (``--stop-file``), saying ``requested: ...`` (``REQUEST``), so that a run still starting takes it
  for its own and not for one left by an earlier stop. A file works across nodes and through
  ``torchrun``, which rewrites exit codes and would die on a signal it does not handle.
- Preemption, ``scancel`` and Ctrl-C send SIGTERM / SIGINT to every process of the job. The training
  processes set a flag; DataLoader workers ignore these signals (``ignore_stop_signals``), so that
  they do not die first and take the main process down with them.

Either way the loop saves a checkpoint at the end of the current iteration (a validation in
progress is abandoned and left owed to the resumed run), and the outcome is written into the stop
file, where the job script reads it to decide whether to requeue.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from .results import atomic_write

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
# How scripts/slurm_train.sh's stop file starts when SLURM's time-limit warning made it: a request to
# the run now going, which may still be starting (the script deletes the file before it starts the run).
REQUEST = "requested:"


def left_by_earlier_stop(stop_file: str | Path) -> bool:
    """Whether ``stop_file`` exists and is not a pending request of the job script (``REQUEST``).

    A stop file that holds an outcome (``stop requested ...: stopped at iteration N``) or anything
    else when a run starts was left by an earlier stop, and would stop this run after its first
    iteration; one the job script wrote on SLURM's warning while the processes were starting is for
    this run, which then stops (and is requeued) as it would have a moment later.
    """
    try:
        return not Path(stop_file).read_text().startswith(REQUEST)
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError):  # a folder, unreadable, or binary: not the script's request
        return True


class StopRequest:
    """A stop asked by a signal (to this process) or by the existence of ``stop_file``."""

    def __init__(self, stop_file: str | Path | None = None) -> None:
        self.stop_file = Path(stop_file) if stop_file else None
        self.signal = 0
        self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum

    @property
    def requested(self) -> bool:
        """Cheap enough to ask per iteration and per validation image (one ``stat`` at most)."""
        return self.signal != 0 or (self.stop_file is not None and self.stop_file.exists())

    @property
    def reason(self) -> str:
        if self.signal:
            return signal.Signals(self.signal).name
        return f"stop file {self.stop_file}" if self.requested else "no stop requested"

    def cut(self, batches: Iterable[T]) -> Iterator[T]:
        """``batches`` until a stop is requested: a validation must not outlast SLURM's warning."""
        for batch in batches:
            if self.requested:
                return
            yield batch

    def report(self, message: str) -> None:
        """Write the outcome into the stop file (the job script requeues when it says ``stopped``)."""
        if self.stop_file is not None:
            with atomic_write(self.stop_file) as f:
                f.write(message + "\n")

    def close(self) -> None:
        """Give the signals back to their previous handlers (train.main may run several times in a process)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: workers leave the decision to stop to the main process."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
