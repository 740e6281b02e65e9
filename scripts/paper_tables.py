"""The paper's tables from your runs: every row a config, every table one command.

    python scripts/paper_tables.py --list
    python scripts/paper_tables.py --table ade20k_ablation --runs runs/           # markdown, missing rows' commands
    python scripts/paper_tables.py --table compare_heads --runs runs/ --format csv
    python scripts/paper_tables.py --table compare_heads --runs runs/ --ci             # intervals, verdicts
    python scripts/paper_tables.py --table ade20k_ablation --runs runs/ --commands --seeds 0 1 2
    python scripts/paper_tables.py --budget --seeds 0 1 2                          # what every table costs to train

It reads the result JSONs that ``eval.py --out`` writes (no training, no model weights) anywhere
under ``--runs`` and matches each to a row by what was trained: the checkpoint's own config, with
the keys that do not change the result left out (paths, intervals, workers, speed switches, the
seed, the eval section). Results of one row are grouped by protocol (printed in the table) and
averaged over seeds: mean ± sample standard deviation and n. ``--ci`` adds each line's 95% interval
and its difference to the table's first line with an interval, p-value and verdict, from the
records eval.py writes beside each JSON (``scripts/compare_runs.py``; over seeds, the hierarchical
bootstrap). Parameters (inference: without the aux head) and FLOPs are computed from each row's
config, as ``scripts/model_info.py`` does.

The paper's numbers are those ``engine/paper_results.py`` records, each with its source
(docs/paper_tables.md, "The paper's numbers"); where none is recorded the cell says so. A row
without results prints the ``train.py`` and ``eval.py`` commands that produce it (``--commands``:
for every missing row and seed, single node and SLURM). The tables are ``engine/paper_tables.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _root  # noqa: F401  (puts the repository root on sys.path)
from engine.paper_tables import TABLES, budget, missing_commands, render
from utils.cli import ArgumentParser, add_debug_flag, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--list", action="store_true", help="the tables this script knows")
    parser.add_argument("--table", choices=sorted(TABLES), help="the table to print")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="folder searched for eval.py result JSONs")
    parser.add_argument("--format", choices=("markdown", "csv", "json"), default="markdown")
    parser.add_argument(
        "--ci", action="store_true", help="intervals and verdicts against the first row (records beside the JSONs)"
    )
    parser.add_argument("--commands", action="store_true", help="print the commands of every missing row and seed")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds for --commands (default: 0)")
    parser.add_argument(
        "--budget", action="store_true", help="training images, FLOPs and GPU-hours of --table (for --seeds)"
    )
    parser.add_argument(
        "--tflops", type=float, default=50.0, help="assumed sustained TFLOP/s per GPU for --budget's hours"
    )
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if not (args.table or args.list or args.budget or args.commands):
        parser.error("choose --table NAME (see --list), or --list / --budget / --commands")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, table in TABLES.items():
            print(f"{name:<20} {table.title} ({len(table.rows)} rows)")
        return 0
    if args.budget:
        for name in [args.table] if args.table else [n for n in TABLES if n != "synthetic_ablation"]:
            print(f"#### {TABLES[name].title}\n\n{budget(name, len(args.seeds), args.tflops)}\n")
        return 0
    if args.commands:
        print(missing_commands([args.table] if args.table else list(TABLES), args.runs, args.seeds))
        return 0
    print(render(args.table, args.runs, args.format, args.ci))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
