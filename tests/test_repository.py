"""Repository hygiene: CI runs the README's set-up commands verbatim."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_no_tracked_file_cites_the_developers_reference_folder():
    """The repository stands alone: what it relies on is in it, in its own words (engine/paper_results.py,
    tests/data). The developers' reference folder is outside it, so no file may name it."""
    needle = "shared" + "/"  # in two pieces, so this file does not match itself
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    citing = []
    for name in files.decode().split("\0"):
        path = ROOT / name
        if not name or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:  # binary
            continue
        lines = data.decode(errors="replace").splitlines()
        citing += [f"{name}:{number}" for number, line in enumerate(lines, 1) if needle in line]
    assert citing == []


@pytest.mark.slow
def test_readme_python_snippet_runs_as_a_script_outside_the_repository(tmp_path):
    """The README says to run it with the repository on PYTHONPATH; it does, from any folder."""
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    snippet = snippet.replace("spnet_r101.yaml", "spnet_r50.yaml").replace("769, 769", "65, 65")  # CPU-sized
    script = tmp_path / "my_script.py"
    script.write_text(snippet + "\nprint(tuple(logits.shape))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("(1, 19, 65, 65)")
