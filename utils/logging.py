"""Run logging: a plain-text log file and console output on rank 0, warnings only elsewhere."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm


class _TqdmHandler(logging.StreamHandler):
    """Console output that does not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never crash training
            self.handleError(record)


_FORMATTER = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")


class _Held(logging.Handler):
    """Keeps the records logged before the log file may be written (``log_to_file`` writes them)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _use_handlers(logger: logging.Logger) -> None:
    """The model builder reports weight loading through its own module logger: same handlers, same level."""
    models_logger = logging.getLogger("models")
    models_logger.handlers[:] = logger.handlers
    models_logger.setLevel(logger.level)
    models_logger.propagate = False


def setup_logging(work_dir: Path | None, is_main: bool, name: str = "spnet") -> logging.Logger:
    """The ``spnet`` logger: INFO to ``<work_dir>/train.log`` and the console on rank 0.

    Without ``work_dir``, rank 0's records are held for ``log_to_file``: train.py logs while it
    checks the run, and writes nothing before every check has passed.
    """
    logger = logging.getLogger(name)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    console = _TqdmHandler()
    console.setFormatter(_FORMATTER)
    logger.addHandler(console)
    if is_main and work_dir is not None:
        log_to_file(logger, work_dir)
    elif is_main:
        logger.addHandler(_Held())
    _use_handlers(logger)
    return logger


def log_to_file(logger: logging.Logger, work_dir: Path) -> None:
    """Start ``<work_dir>/train.log`` (appending): the held records first, then everything from now on.

    A symbolic link named train.log is refused: appending would write through it into whatever file
    it points to.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "train.log"
    if path.is_symlink():
        raise ValueError(
            f"{path} is a symbolic link (to {os.readlink(path)}); a run appends its log to a file of its own "
            "only: remove the link, then start again"
        )
    file = logging.FileHandler(path)
    file.setFormatter(_FORMATTER)
    for held in [h for h in logger.handlers if isinstance(h, _Held)]:
        for record in held.records:
            file.handle(record)
        logger.removeHandler(held)
    logger.addHandler(file)
    _use_handlers(logger)
