"""Checkpoint files: plain dicts written atomically, so a crash mid-write never destroys the last good one.

Reading is ``weights_only`` (no code from the file runs) with one-line errors that name the file.
``--resume auto`` takes the newest intact checkpoint of a run (``last.pth``, else the ``iter_*.pth``
files, newest first), so a ``last.pth`` truncated by a crash or a full disk costs one checkpoint
interval, not the run. A full disk during a save is an ``OSError(ENOSPC)`` that says so, and the
previous checkpoint stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .results import atomic_write, disk_full, disk_full_error, human_size

TRAINING_KEYS = ("model", "optimizer", "scheduler", "scaler", "iter", "best_miou", "rng", "config")
ITER_FILE = re.compile(r"iter_(\d+)\.pth")
# The temporary files our writers create in a run's folder: save_atomic's mkstemp names
# (".<target>.<8 random characters>.tmp") for iter_*.pth and best.pth, and last.pth's link.
TEMPORARY_FILES = re.compile(r"\.(iter_\d+\.pth|best\.pth)\.[a-z0-9_]{8}\.tmp|\.last\.pth\.tmp")


class CheckpointReadError(ValueError):
    """A file that is there but cannot be loaded: truncated (a crash or a full disk), corrupt, or not PyTorch."""

    def __init__(self, path: Path, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"cannot read {path} as a PyTorch checkpoint: {reason}")
        self.path, self.reason = path, reason


class NotWeightsError(CheckpointReadError):
    """A file whose pickle holds objects that are not weights (a class, a function): ``weights_only``
    refuses to build them, since unpickling them could run code from the file. Complete, not corrupt."""


# torch's weights_only refusals of what a file holds (torch/_weights_only_unpickler.py), as opposed to
# bytes it cannot parse ("Unsupported operand", a zip without its central directory ...)
_NOT_WEIGHTS = re.compile(r"GLOBAL ([\w.]+)|Can only (?:create new object|build) .*?got (?:<class ')?([\w.]+)")


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load`` on the CPU with ``weights_only=True`` (no code execution), with clear errors.

    A missing file is a ``FileNotFoundError`` ("<what> not found: <path>"), an unreadable one a
    one-line ``CheckpointReadError`` with its size and torch's reason; a file that holds objects other
    than tensors and plain containers (a planted pickle, a training script's ``argparse.Namespace``)
    is a ``NotWeightsError`` that says so: nothing of it is built.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises OSError, RuntimeError, EOFError, UnpicklingError ... for bad files
        refused = _NOT_WEIGHTS.search(str(err)) if "Weights only load failed" in str(err) else None
        if refused:
            what = refused.group(1) or refused.group(2)
            reason = (
                f"it contains objects that are not weights ({what}), which are not loaded: unpickling them could "
                "run code from the file. If you trust its source, load it with torch.load(..., weights_only=False) "
                "and torch.save only its tensors (a state_dict)"
            )
            raise NotWeightsError(path, reason) from err
        first = (str(err).strip().splitlines() or [""])[0].split(". ")[0][:200]  # torch's messages go on and on
        detail = f"{type(err).__name__}: {first}" if first else type(err).__name__
        reason = f"truncated, corrupt or not a PyTorch file ({human_size(path.stat().st_size)}; {detail})"
        raise CheckpointReadError(path, reason) from err


def _missing_training_keys(state: Any) -> list[str]:
    return [k for k in TRAINING_KEYS if not isinstance(state, dict) or k not in state]


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by ``train.py``, on the CPU (optimizer state moves to the parameters' device)."""
    state = read_checkpoint(path, "checkpoint")
    missing = _missing_training_keys(state)
    if missing:
        raise ValueError(
            f"{path} is not a training checkpoint (missing {missing}); to start from its weights use "
            f"train.load_from={path} instead of --resume"
        )
    return state


def _resume_candidates(work_dir: Path) -> list[Path]:
    """``last.pth``, then the ``iter_*.pth`` files, newest first."""
    iters = [p for p in work_dir.glob("iter_*.pth") if ITER_FILE.fullmatch(p.name) and p.is_file()]
    iters.sort(key=lambda p: int(ITER_FILE.fullmatch(p.name).group(1)), reverse=True)
    last = work_dir / "last.pth"
    return ([last] if last.is_file() else []) + iters


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def find_resume_checkpoint(
    resume: str | None, work_dir: str | Path, *, warn: Callable[[str], object] = warnings.warn
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to resume from and its loaded state (read once), or None to start fresh.

    ``resume``: None (start fresh), a path (that file, which must be an intact training checkpoint:
    otherwise an error naming it), or ``"auto"``: the newest intact training checkpoint in
    ``work_dir``, trying ``last.pth`` and then the ``iter_*.pth`` files, newest first (an iter file
    that is ``last.pth``'s hard link is not read again). None if there is none of these files. When
    a newer file was skipped, ``warn`` gets one message naming the skipped file(s), why, and the file
    used; when every file is unreadable, one ``CheckpointReadError`` lists them all.
    """
    if resume is None:
        return None
    if resume != "auto":
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"--resume {resume}: no such checkpoint")
        return path, read_training_checkpoint(path)

    work_dir = Path(work_dir)
    skipped: list[tuple[Path, str]] = []
    for path in _resume_candidates(work_dir):
        twin = next((bad for bad, _ in skipped if _same_file(path, bad)), None)
        if twin is not None:
            skipped.append((path, f"the same file as {twin.name}"))
            continue
        try:
            state = read_checkpoint(path)
        except CheckpointReadError as err:
            skipped.append((path, err.reason))
            continue
        missing = _missing_training_keys(state)
        if missing:
            skipped.append((path, f"not a training checkpoint (missing {missing})"))
            continue
        if skipped:
            bad = "; ".join(f"{p} is unusable: {why}" for p, why in skipped)
            warn(f"--resume auto: {bad}. Resuming from {path} (iteration {state['iter']}) instead")
        return path, state
    if skipped:
        listing = "\n".join(f"  {p}: {why}" for p, why in skipped)
        raise CheckpointReadError(
            work_dir,
            "no intact training checkpoint",
            f"--resume auto: no intact training checkpoint in {work_dir}:\n{listing}\n"
            "Move these files away to start from scratch, or pass --resume PATH",
        )
    return None


def existing_run(work_dir: str | Path) -> str | None:
    """What of a trained run ``work_dir`` holds (``"last.pth at iteration 4"``, ``"best.pth"`` ...), or None.

    A fresh run there would overwrite its ``best.pth`` and ``last.pth`` and mix its ``iter_*.pth``
    files with the new ones: train.py refuses, and this names what would be lost.
    """
    work_dir = Path(work_dir)
    last = work_dir / "last.pth"
    if last.is_file():
        try:  # mmap: reads the iteration, not the weights
            return f"last.pth at iteration {torch.load(last, map_location='cpu', weights_only=True, mmap=True)['iter']}"
        except Exception:  # truncated or not ours: its name says enough
            return "last.pth"
    found = [p.name for p in _resume_candidates(work_dir)]
    if (work_dir / "best.pth").is_file():
        found.append("best.pth")
    return ", ".join(found) or None


def _disk_full(err: BaseException, directory: Path) -> int:
    """``errno.ENOSPC`` / ``errno.EDQUOT`` if ``err`` comes from a full disk or quota, else 0.

    Writing through a Python file object, ``torch.save`` turns the ``OSError(ENOSPC)`` of the write
    into ``RuntimeError: [enforce fail at inline_container.cc:...] unexpected pos ...`` (the OSError
    is its ``__context__``); closing the file then raises the OSError again. Either is recognised by
    the errno anywhere in the exception chain; a bare "unexpected pos" counts when the disk is full.
    """
    code = disk_full(err, directory)
    if not code and isinstance(err, RuntimeError) and "unexpected pos" in str(err):
        try:
            if shutil.disk_usage(directory).free < 2**20:
                return errno.ENOSPC
        except OSError:
            pass
    return code


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    On any failure the temporary file is removed and ``path`` is untouched. A full disk (or quota)
    is an ``OSError(ENOSPC / EDQUOT)`` whose message names ``path`` and the free space.
    """
    with atomic_write(path, "wb", fsync=True, full=_disk_full) as f:
        torch.save(obj, f)


def save_training_checkpoint(state: dict[str, Any], work_dir: str | Path, iteration: int, keep: int) -> Path:
    """Write ``iter_XXXXXXX.pth`` and make ``last.pth`` point at it; keep the newest ``keep`` iter files.

    ``last.pth`` is a hard link (no second copy of a large file), replaced atomically; where the
    filesystem has no hard links it is a copy.
    """
    work_dir = Path(work_dir)
    path = work_dir / f"iter_{iteration:07d}.pth"
    last = work_dir / "last.pth"
    try:
        save_atomic(state, path)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT) or not last.is_file():
            raise
        raise OSError(err.errno, f"{err.strerror}; {last} still holds the previous checkpoint") from err.__cause__
    link = work_dir / ".last.pth.tmp"
    link.unlink(missing_ok=True)
    try:
        try:
            os.link(path, link)
        except OSError:
            shutil.copyfile(path, link)
        os.replace(link, last)
    except BaseException as err:
        link.unlink(missing_ok=True)
        code = _disk_full(err, work_dir) if isinstance(err, Exception) else 0
        if code:
            raise disk_full_error(code, last, last.exists(), None) from err
        raise
    for old in sorted(work_dir.glob("iter_*.pth"))[: -keep if keep > 0 else None]:
        old.unlink()
    return path


def remove_stale_temporaries(work_dir: str | Path) -> list[Path]:
    """Delete the temporary files an interrupted save left in ``work_dir``; returns them.

    Only regular files named as our writers name them (``.iter_XXXXXXX.pth.<random>.tmp``,
    ``.best.pth.<random>.tmp``, ``.last.pth.tmp``) directly in ``work_dir``; nothing else is touched.
    Call it on one process (rank 0) before training starts, when no save is in progress.
    """
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    removed = []
    for path in sorted(work_dir.iterdir()):
        if TEMPORARY_FILES.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def rng_states() -> dict[str, Any]:
    """Every RNG a training step may draw from (dropout: torch; user code: numpy, random).

    CUDA: the generator of this process's current device only, so a checkpoint resumes on a node
    whose processes see another number of GPUs.
    """
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(torch.cuda.current_device()) if torch.cuda.is_available() else None,
        "numpy": np.random.get_state()[1].tolist(),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": random.getstate(),
    }


@contextlib.contextmanager
def rng_untouched() -> Iterator[None]:
    """Whatever runs inside draws from the RNGs (building modules does), they come out as they went in.

    Validation during training runs inside it: otherwise the training after a validation would see
    other random numbers (dropout) than a run resumed from the checkpoint saved before it.
    """
    saved = rng_states()
    try:
        yield
    finally:
        set_rng_states(saved)


def set_rng_states(states: dict[str, Any]) -> list[str]:
    """Restore ``rng_states()``; returns the generators whose saved state could not be restored.

    ``cuda`` goes to the current device. It is skipped (and reported) on a machine without CUDA, and
    for old checkpoints, which hold one state per visible GPU, when that list has no entry for the
    current device.
    """
    torch.set_rng_state(states["torch"])
    not_restored = []
    cuda = states.get("cuda")
    if isinstance(cuda, (list, tuple)):  # old checkpoints: get_rng_state_all(), [] when written without CUDA
        device = torch.cuda.current_device() if cuda and torch.cuda.is_available() else None
        if cuda and (device is None or device >= len(cuda)):
            not_restored.append("cuda")
        cuda = cuda[device] if device is not None and device < len(cuda) else None
    if cuda is not None:
        if torch.cuda.is_available():
            torch.cuda.set_rng_state(cuda, torch.cuda.current_device())
        else:
            not_restored.append("cuda")
    np.random.set_state(("MT19937", np.array(states["numpy"], dtype=np.uint32), states["numpy_pos"], 0, 0.0))
    random.setstate(tuple(tuple(s) if isinstance(s, list) else s for s in states["python"]))
    return not_restored


def restore_process_rng(saved: list[dict[str, Any]], rank: int, world_size: int, device: Any) -> str | None:
    """Restore this process's RNG states from a checkpoint's ``rng`` (one entry per process); a warning
    when they cannot be. Only model-side randomness (dropout) depends on it: the data stream is
    exact whatever happens here."""
    if len(saved) != world_size:
        return f"the checkpoint has RNG states of {len(saved)} processes, not {world_size}: not restored"
    if set_rng_states(saved[rank]):
        return f"the checkpoint has no CUDA RNG state for {device}: model-side randomness restarts"
    return None


def load_scaler_state(scaler: torch.amp.GradScaler, saved: dict) -> bool:
    """Restore the fp16 loss scale; False when the checkpoint was trained without fp16 (nothing to restore)."""
    if not saved and scaler.is_enabled():
        return False
    scaler.load_state_dict(saved)
    return True
