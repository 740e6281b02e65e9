"""Train and evaluate every row of a table for several seeds on this machine, then print the table.

    python scripts/run_study.py                                    # the CPU study: synthetic_ablation, seeds 0 1 2
    python scripts/run_study.py --table synthetic_ablation --seeds 0 --jobs 1

The runs are those ``scripts/paper_tables.py --commands`` prints, with ``python`` instead of
``torchrun``: ``--jobs`` of them side by side, each on ``cores / jobs`` threads (on 2 cores, two
single-threaded trainings finish sooner than one on two threads). A row and seed whose result JSON
exists is skipped, so an interrupted study continues where it stopped. The data the study's configs
name (``data/synthetic_cityscapes``) is written first if it is missing. Wall times go to
``<runs>/<table>/study.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _root import ROOT  # (puts the repository root on sys.path)
from engine.paper_tables import TABLES, WORK_DIRS, eval_args, render, result_path, train_args
from utils.cli import ArgumentParser, add_debug_flag, run
from utils.config import load_config


def ensure_data(table_name: str) -> None:
    """Write the synthetic Cityscapes tree the table's configs read, if it is not there (README's command)."""
    from datasets.synthetic import write_cityscapes

    roots = {load_config(ROOT / row.config).data.root for row in TABLES[table_name].rows}
    for root in roots:
        if "synthetic" in root and not (ROOT / root / "leftImg8bit").is_dir():
            print(f"writing the synthetic dataset to {root}", flush=True)
            write_cityscapes(ROOT / root, {"train": 200, "val": 50}, (256, 512), seed=0)


def run_job(table_name: str, row, seed: int, runs: Path, threads: int, overrides: list[str], root: str) -> dict:
    """train.py then eval.py for one row and seed; their output goes to ``<result>.log``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    steps = {
        "train": [sys.executable, "train.py", *train_args(table_name, row, seed, root), *overrides],
        "eval": [sys.executable, "eval.py", *eval_args(table_name, row, seed, runs, root), *overrides],
    }
    seconds = {}
    log = result_path(table_name, row, seed, runs).with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        for step, command in steps.items():
            start = time.perf_counter()
            print(f"[{row.id} seed {seed}] {step}: {' '.join(command[1:])}", flush=True)
            code = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
            seconds[step] = time.perf_counter() - start
            if code != 0:
                raise RuntimeError(f"{row.id} seed {seed}: {step} failed with exit code {code}; see {log}")
    print(f"[{row.id} seed {seed}] done in {sum(seconds.values()):.0f} s", flush=True)
    return {"row": row.id, "seed": seed, "seconds": seconds}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--table", choices=sorted(TABLES), default="synthetic_ablation")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side (default: 2, one per core)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the result JSONs go")
    parser.add_argument("--work-dirs", default=WORK_DIRS, help="where the checkpoints go (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run (e.g. a quick check)")
    add_debug_flag(parser)
    args = parser.parse_intermixed_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = args.runs if args.runs.is_absolute() else ROOT / args.runs
    ensure_data(args.table)
    todo = [
        (row, seed)
        for row in TABLES[args.table].rows
        for seed in args.seeds
        if not result_path(args.table, row, seed, runs).is_file()
    ]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    print(f"{len(todo)} runs to do, {args.jobs} at a time on {threads} thread(s) each", flush=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(
            pool.map(lambda job: run_job(args.table, *job, runs, threads, args.overrides, args.work_dirs), todo)
        )
    wall = time.perf_counter() - start
    summary = {"table": args.table, "seeds": args.seeds, "jobs": args.jobs, "threads": threads, "wall_seconds": wall}
    if done:
        (runs / args.table).mkdir(parents=True, exist_ok=True)
        (runs / args.table / "study.json").write_text(json.dumps({**summary, "runs": done}, indent=1))
    print(f"{len(done)} runs in {wall / 60:.1f} min\n")
    print(render(args.table, runs, "markdown"))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
