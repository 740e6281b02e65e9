"""The commands the README and docs/ show still run: their flags parse and their config overrides exist.

A renamed flag or config key would otherwise leave a documented number without a working command.
Each command is parsed by its script's own ``parse_args`` and the configs it would load are loaded
with its overrides (``--versus`` ones too; for ``run_study.py`` every row of its table; for the
SLURM script its CONFIG and overrides), without running anything.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

from engine.paper_tables import TABLES
from utils.cli import apply_protocol_flags
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MODULES = {  # script -> module with parse_args
    "train.py": "train",
    "eval.py": "eval",
    "scripts/benchmark.py": "scripts.benchmark",
    "scripts/benchmark_data.py": "scripts.benchmark_data",
    "scripts/compare_official.py": "scripts.compare_official",
    "scripts/model_info.py": "scripts.model_info",
    "scripts/predict.py": "scripts.predict",
    "scripts/check_dataset.py": "scripts.check_dataset",
    "scripts/convert_checkpoint.py": "scripts.convert_checkpoint",
    "scripts/make_synthetic.py": "scripts.make_synthetic",
    "scripts/module_table.py": "scripts.module_table",
    "scripts/gpu_check.py": "scripts.gpu_check",
    "scripts/paper_tables.py": "scripts.paper_tables",
    "scripts/plot.py": "scripts.plot",
    "scripts/prepare_cityscapes.py": "scripts.prepare_cityscapes",
    "scripts/run_study.py": "scripts.run_study",
    "scripts/compare_runs.py": "scripts.compare_runs",
    "scripts/receptive_field.py": "scripts.receptive_field",
    "scripts/export.py": "scripts.export",
    "scripts/benchmark_deploy.py": "scripts.benchmark_deploy",
}
SLURM_SCRIPT = "scripts/slurm_train.sh"  # sbatch [options] scripts/slurm_train.sh CONFIG [key=value ...]
LAUNCHERS = ("python", "torchrun", "sbatch")
PLACEHOLDERS = {"CFG": "configs/demo.yaml"}  # words the docs leave to the reader
CONFIG_PLACEHOLDER = ("<config>", "r50_spnet")  # as in configs/ade20k/ablations/<config>.yaml


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(where, script, arguments) of every command in a ```bash block that runs one of ``MODULES``."""
    commands = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True) if any(w in line for w in LAUNCHERS) else []
                for command in _split_at(words, {"&&", "||", ";", "|"}):
                    scripts = [i for i, word in enumerate(command) if word in MODULES or word == SLURM_SCRIPT]
                    if scripts and "..." not in command:
                        arguments = [_fill(word) for word in command[scripts[0] + 1 :]]
                        commands.append((f"{doc.name}: {' '.join(command)[:100]}", command[scripts[0]], arguments))
    return commands


def _split_at(words: list[str], separators: set[str]) -> list[list[str]]:
    commands: list[list[str]] = [[]]
    for word in words:
        if word in separators:
            commands.append([])
        else:
            commands[-1].append(word)
    return commands


def _fill(word: str) -> str:
    return PLACEHOLDERS.get(word, word).replace(*CONFIG_PLACEHOLDER)


COMMANDS = documented_commands()


def configs_of(script: str, args) -> list[tuple[str, list[str]]]:
    """(config, overrides) of every config a parsed command would load."""
    if script == "scripts/run_study.py":  # its overrides go to every row of its table
        return [(row.config, args.overrides) for row in TABLES[args.table].rows]
    if getattr(args, "config", None) is None:  # a script without a config, or convert_checkpoint.py without one
        return []
    overrides = getattr(args, "overrides", [])
    versus = getattr(args, "versus", None)  # benchmark.py: the second setting's overrides too
    return [(args.config, overrides)] + ([(args.config, [*overrides, *versus])] if versus else [])


def test_the_docs_show_commands_of_every_covered_script():
    assert {script for _, script, _ in COMMANDS} == {*MODULES, SLURM_SCRIPT}
    assert len(COMMANDS) >= 60, len(COMMANDS)


@pytest.mark.parametrize("script, arguments", [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_documented_command_parses_and_its_overrides_exist(script, arguments, monkeypatch):
    monkeypatch.chdir(ROOT)  # config paths are relative to the repository root, as the docs run them
    if script == SLURM_SCRIPT:
        load_config(arguments[0], arguments[1:])
        return
    module = importlib.import_module(MODULES[script])
    args = module.parse_args(arguments)
    configs = [load_config(config, overrides) for config, overrides in configs_of(script, args)]
    if script in ("eval.py", "scripts/predict.py"):
        apply_protocol_flags(configs[0], args)  # the protocol flags on top of the config


def test_module_swaps_on_the_demo_train_in_a_folder_of_their_own(monkeypatch):
    """A new user runs the README's swap lines after the demo: one that reused work_dirs/demo would stop at the
    demo's finished run (engine/run_dir.refuse_existing_run)."""
    from engine.run_dir import work_dir_of

    monkeypatch.chdir(ROOT)
    demo = work_dir_of(load_config("configs/demo.yaml"), "configs/demo.yaml")
    swaps = [
        args
        for _, script, args in COMMANDS
        if script == "train.py" and "configs/demo.yaml" in args and any(a.startswith("model.") for a in args)
    ]
    assert len(swaps) >= 2
    for args in swaps:
        parsed = importlib.import_module("train").parse_args(args)
        assert work_dir_of(load_config(parsed.config, parsed.overrides), parsed.config) != demo, args
