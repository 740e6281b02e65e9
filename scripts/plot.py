"""Analysis plots of runs and evaluations, as PNG files.

    python scripts/plot.py curves work_dirs/demo work_dirs/demo_ppm --out curves.png
    python scripts/plot.py confusion work_dirs/demo/eval_val_spnet_slide256_s1_flip.json --out confusion.png
    python scripts/plot.py classes A.json B.json --labels SPNet PPM --out classes.png

``curves``: training loss, learning rate and validation mIoU against the iteration, read from each
run's TensorBoard events, several runs overlaid (labelled by their folder, or ``--labels``).
``confusion``: the confusion matrix of an ``eval.py`` result, rows normalised (where each class's
pixels went), from the per-image records eval.py writes beside its JSON; several results joined by
commas (the seeds of one row, as ``compare_runs.py`` takes them) are drawn as their summed matrix.
``classes``: per-class IoU of several ``eval.py`` results side by side, with bootstrap confidence
intervals over images (``--level``; as ``scripts/compare_runs.py`` computes them).

Plots need matplotlib (``pip install matplotlib``); the confusion matrix only Pillow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _root  # noqa: F401  (puts the repository root on sys.path)
from utils.cli import ArgumentParser, add_debug_flag, run
from utils.comparison import compare, load_rows, record_files
from utils.plots import class_iou_bars, read_curves, training_curves
from utils.visualize import confusion_picture, save_png


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{curves,confusion,classes}")
    curves = commands.add_parser("curves", help="loss, LR and validation mIoU of train.py runs")
    curves.add_argument("runs", nargs="+", type=Path, help="train.py work dirs")
    confusion = commands.add_parser("confusion", help="the confusion matrix of an eval.py result")
    confusion.add_argument(
        "result", help="an eval.py results JSON (its records beside it), a records .npz, or comma-joined seeds"
    )
    classes = commands.add_parser("classes", help="per-class IoU of eval.py results, with intervals")
    classes.add_argument("runs", nargs="+", help="results JSON / records .npz / comma-joined seeds, as compare_runs")
    classes.add_argument("--level", type=float, default=0.95, help="of the intervals (default: 0.95)")
    classes.add_argument("--samples", type=int, default=2000, help="bootstrap samples (default: 2000)")
    classes.add_argument("--seed", type=int, default=0, help="of the resampling")
    for sub in (curves, confusion, classes):
        if sub is not confusion:
            sub.add_argument("--labels", nargs="+", help="one name per run (default: the folder or file names)")
        sub.add_argument("--out", type=Path, required=True, help="the PNG to write")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if getattr(args, "labels", None) is not None and len(args.labels) != len(args.runs):
        parser.error(f"--labels: {len(args.labels)} label(s) for {len(args.runs)} run(s); give one per run")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "curves":
        labels = args.labels or [path.resolve().name for path in args.runs]
        picture = training_curves({label: read_curves(path) for label, path in zip(labels, args.runs)})
    elif args.command == "confusion":
        (row,) = load_rows([args.result])
        for path, records in zip(record_files(args.result), row.seeds):
            if records.confusion is None:
                raise ValueError(f"{path}: records without the confusion matrix (an older eval.py); evaluate again")
        matrix = sum(records.confusion for records in row.seeds)
        images = len(row.seeds[0].names)
        seeds = f", {len(row.seeds)} runs summed" if len(row.seeds) > 1 else ""
        picture = confusion_picture(matrix, row.seeds[0].classes, f"{row.label}: {images} images{seeds}")
    else:
        rows = load_rows(args.runs, args.labels)
        result = compare(rows, level=args.level, samples=args.samples, seed=args.seed, per_class=True)
        classes = rows[0].seeds[0].classes
        ious = {run["label"]: [run["per_class"][c]["iou"] for c in classes] for run in result["runs"]}
        intervals = {run["label"]: [tuple(run["per_class"][c]["ci"]) for c in classes] for run in result["runs"]}
        level = f"{100 * args.level:g}%"
        title = f"class IoU, {level} bootstrap intervals over {result['images']} images"
        picture = class_iou_bars(classes, ious, intervals, title)
    save_png(picture, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
