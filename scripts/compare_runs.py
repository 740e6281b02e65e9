"""Is run B better than run A, or within noise? mIoU with confidence intervals, paired differences and p-values.

    python scripts/compare_runs.py eval_val_a.json eval_val_b.json                    # the records beside each JSON
    python scripts/compare_runs.py a.records.npz b.records.npz --labels fcn spnet --per-class
    python scripts/compare_runs.py runs/fcn_s0/val_records.npz,runs/fcn_s1/val_records.npz runs/spnet_seeds/
    python scripts/compare_runs.py A B C --level 0.99 --samples 20000 --seed 1 --json comparison.json

Each run is a records file (``eval.py`` writes ``<results>.records.npz`` beside its JSON, ``train.py``
``val_records.npz`` beside ``val_metrics.json``), a results JSON, a folder, or several of these joined
by commas: the seeds of one row. The first run is the baseline. Every run gets its mIoU with a
percentile bootstrap interval over images; every other run its difference to the baseline with
its interval (paired: the same resampled images), a paired permutation test's p-value and a
verdict. The method, and the hierarchical bootstrap over seeds, are in ``utils/comparison.py`` and
docs/evaluation.md ("Comparing runs with confidence").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _root  # noqa: F401  (puts the repository root on sys.path)
from utils.cli import ArgumentParser, add_debug_flag, run
from utils.comparison import compare, format_comparison, load_rows
from utils.results import write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", help="records .npz / results JSON / folder / comma-joined seeds; first: A")
    parser.add_argument("--labels", nargs="+", help="one name per run (default: the file names)")
    parser.add_argument("--level", type=float, default=0.95, help="of the intervals and the verdict (default: 0.95)")
    parser.add_argument("--samples", type=int, default=10000, help="bootstrap samples and permutations (10000)")
    parser.add_argument("--seed", type=int, default=0, help="of the resampling: the same seed, the same numbers")
    parser.add_argument("--per-class", action="store_true", help="also every class IoU's difference and interval")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("give at least two runs: the baseline A, then B [C ...]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = load_rows(args.runs, args.labels)
    result = compare(rows, level=args.level, samples=args.samples, seed=args.seed, per_class=args.per_class)
    print(format_comparison(result, args.per_class))
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
