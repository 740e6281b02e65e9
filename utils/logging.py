"""Run logging: a plain-text log file and console output on rank 0, warnings only elsewhere."""

from __future__ import annotations

import logging
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


def setup_logging(work_dir: Path | None, is_main: bool, name: str = "spnet") -> logging.Logger:
    """The ``spnet`` logger: INFO to ``<work_dir>/train.log`` and the console on rank 0."""
    logger = logging.getLogger(name)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = _TqdmHandler()
    console.setFormatter(formatter)
    logger.addHandler(console)
    if is_main and work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(work_dir / "train.log")
        file.setFormatter(formatter)
        logger.addHandler(file)
    # the model builder reports weight loading through its own module logger
    models_logger = logging.getLogger("models")
    models_logger.handlers[:] = logger.handlers
    models_logger.setLevel(logger.level)
    models_logger.propagate = False
    return logger
