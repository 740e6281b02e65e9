"""Checkpoint files: plain dicts written atomically, so a crash mid-write never destroys the last good one."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows when on the same filesystem
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_training_checkpoint(state: dict[str, Any], work_dir: str | Path, iteration: int, keep: int) -> Path:
    """Write ``iter_XXXXXXX.pth`` and make ``last.pth`` point at it; keep the newest ``keep`` iter files.

    ``last.pth`` is a hard link (no second copy of a large file), replaced atomically; where the
    filesystem has no hard links it is a copy.
    """
    work_dir = Path(work_dir)
    path = work_dir / f"iter_{iteration:07d}.pth"
    save_atomic(state, path)
    link = work_dir / ".last.pth.tmp"
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
    except OSError:
        shutil.copyfile(path, link)
    os.replace(link, work_dir / "last.pth")
    for old in sorted(work_dir.glob("iter_*.pth"))[: -keep if keep > 0 else None]:
        old.unlink()
    return path


def resolve_resume(resume: str | None, work_dir: str | Path) -> Path | None:
    """``--resume auto``: ``<work_dir>/last.pth`` if it exists (else start fresh); a path must exist."""
    if resume is None:
        return None
    if resume == "auto":
        last = Path(work_dir) / "last.pth"
        return last if last.is_file() else None
    if not Path(resume).is_file():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint")
    return Path(resume)


def rng_states() -> dict[str, Any]:
    """Every RNG a training step may draw from (dropout: torch; user code: numpy, random)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state()[1].tolist(),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(("MT19937", np.array(states["numpy"], dtype=np.uint32), states["numpy_pos"], 0, 0.0))
    random.setstate(tuple(tuple(s) if isinstance(s, list) else s for s in states["python"]))


TRAINING_KEYS = ("model", "optimizer", "scheduler", "scaler", "iter", "best_miou", "rng", "config")


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by ``train.py``, on the CPU (optimizer state moves to the parameters' device)."""
    from models.weights import read_checkpoint  # weights_only load with readable errors

    state = read_checkpoint(path, "checkpoint")
    missing = [k for k in TRAINING_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(
            f"{path} is not a training checkpoint (missing {missing}); to start from its weights use "
            f"train.load_from={path} instead of --resume"
        )
    return state
