"""Repository hygiene: CI runs the README's set-up commands verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(python3 -m venv .*?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_the_readme_setup_commands_verbatim():
    commands = _readme_commands()
    assert len(commands) == 2, "the README gives exactly two set-up commands"
    ci_lines = (ROOT / ".ci/run").read_text().splitlines()
    for command in commands:
        assert command in ci_lines
    assert any("pytest" in c for c in commands)
