"""Where the repository is: config paths in the docs, the paper tables and the scripts are relative to its root."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
