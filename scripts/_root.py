"""Puts the repository root on ``sys.path``: every script imports this first.

The repository is not an installed package (its top-level ``datasets`` would shadow Hugging Face's),
so ``python scripts/<name>.py``, from any working directory, finds the library (``models``,
``datasets``, ``engine``, ``utils``) through this one line of path setting.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.paths import REPO_ROOT as ROOT

__all__ = ["ROOT"]
