"""One training run per work dir: an exclusive lock held for the run's lifetime.

Two runs in one folder overwrite each other's checkpoints, and one's start-up removes the other's
temporary files. The lock is ``flock`` on ``<work_dir>/.lock``: the kernel releases it when the
process ends, however it ends (kill -9 included), so a crashed run never blocks the folder. The
file holds who took it (process, host, time) and is emptied on a clean release: a file with a
holder whose lock is free was left by a run that ended without releasing it, which is said.
``flock`` works across the nodes of a shared filesystem that supports it (NFSv4, Lustre, GPFS).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from utils.distributed import broadcast_object

LOCK_FILE = ".lock"


class RunLockedError(ValueError):
    """Another process holds the work dir."""


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _refusal(work_dir: Path, holder: str) -> RunLockedError:
    who = f" ({holder})" if holder else ""
    return RunLockedError(
        f"{work_dir} is in use by another training run{who}; wait for it to end, or pick another train.work_dir=..."
    )


def check_unlocked(work_dir: str | Path) -> None:
    """Refuse now if another run holds ``work_dir``, writing nothing (the lock is taken later, by ``RunLock``).

    Every process of a job checks at once; the probe is a *shared* lock, which conflicts with a run's
    exclusive one but not with the other processes' probes (an exclusive probe refused a job whose
    ranks happened to check at the same instant).
    """
    path = Path(work_dir) / LOCK_FILE
    if not path.is_file():
        return
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(Path(work_dir), _holder(path)) from None
        fcntl.flock(f, fcntl.LOCK_UN)


class RunLock:
    """``RunLock(work_dir).acquire()`` takes the lock or raises ``RunLockedError``; ``release()`` gives it back.

    ``stale`` says who held it before and ended without releasing it (killed, crashed), if anyone.
    """

    def __init__(self, work_dir: str | Path) -> None:
        self.work_dir = Path(work_dir)
        self.path = self.work_dir / LOCK_FILE
        self.stale = ""
        self._file = None

    def acquire(self) -> RunLock:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # never removed: a second file would be a second lock
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise _refusal(self.work_dir, _holder(self.path)) from None
        f.seek(0)
        self.stale = f.read().strip()
        f.seek(0)
        f.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        """Empty the file (a clean end) and unlock; a no-op if not held."""
        if self._file is None:
            return
        self._file.truncate(0)
        self._file.flush()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


def lock_run(work_dir: str | Path, is_main: bool) -> RunLock | None:
    """The run's lock, taken by the main process (None elsewhere); every process raises if it is held."""
    lock, error = None, None
    if is_main:
        try:
            lock = RunLock(work_dir).acquire()
        except RunLockedError as err:
            error = str(err)
    error = broadcast_object(error)  # the other processes stop too, instead of waiting in a collective
    if error:
        raise RunLockedError(error)
    return lock
