"""Dataset doctor: validate a dataset root and summarise it; exits 1 when it would train wrongly.

    python scripts/check_dataset.py --dataset cityscapes --root data/cityscapes
    python scripts/check_dataset.py --dataset ade20k --root data/ADEChallengeData2016
    python scripts/check_dataset.py --dataset folder --root data/mine --arg classes='[bg, crop, weed]'

Checks: the layout of every split, image counts against the official ones, that every image and
mask decodes in full (truncated downloads, 16-bit or float images), image and mask sizes, the label
space the masks are in (labelIds vs trainIds, ADE20K's 0 = other) against what the loader assumes,
invalid mask values (naming the files), and the pixel share of every class. ``--max-images N``
decodes N evenly spaced samples per split instead of all, for a quick look. Images larger than
Pillow's guard against decompression bombs (178,956,970 pixels) are problems; ``--max-pixels N``
sets another limit (train.py and eval.py take it from ``data.max_image_pixels``).

``--stats [PATH]`` also prints the pixel and image frequency of every class of a split
(``--stats-split``, default train) and writes them as JSON to PATH, by default
``<root>/class_statistics_<split>.json`` (what ``loss.class_weight: {auto: ...}`` is computed from).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

import _root  # noqa: F401  (puts the repository root on sys.path)
from datasets import DATASETS
from datasets.doctor import check_dataset
from datasets.statistics import split_statistics
from utils.cli import ArgumentParser, add_debug_flag, run
from utils.results import write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="dataset argument (YAML value)")
    parser.add_argument("--max-masks", type=int, default=200, help="masks read per split for label statistics")
    parser.add_argument(
        "--max-images", type=int, default=None, help="images (and masks) decoded per split, evenly spaced; default all"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="larger images and masks are problems (default: Pillow's decompression-bomb limit, 178,956,970)",
    )
    parser.add_argument(
        "--stats", nargs="?", const="", metavar="PATH", help="print per-class pixel and image frequencies and write "
        "them as JSON to PATH (default <root>/class_statistics_<split>.json)",
    )  # fmt: skip
    parser.add_argument("--stats-split", default="train", help="the split --stats counts (default train)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    for flag, value in (("--max-images", args.max_images), ("--max-pixels", args.max_pixels)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be at least 1")
    args.dataset_args = {}
    for item in args.arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--arg {item!r} must look like KEY=VALUE, e.g. --arg 'classes=[bg, crop, weed]'")
        try:
            args.dataset_args[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            parser.error(f"--arg {item!r}: cannot parse {value!r} as YAML: {getattr(err, 'problem', None) or err}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = check_dataset(
        args.dataset,
        args.root,
        dataset_args=args.dataset_args,
        max_masks=args.max_masks,
        max_images=args.max_images,
        args_key="--arg",
        max_pixels=args.max_pixels,
        limit_key="--max-pixels",
    )
    print(report)
    if args.stats is not None:
        stats = split_statistics(args.dataset, args.root, args.stats_split, args.dataset_args, "--arg")
        path = Path(args.stats or args.root / f"class_statistics_{args.stats_split}.json")
        write_json(
            path, {"dataset": args.dataset, "root": str(args.root), "split": args.stats_split, **stats.to_dict()}
        )
        print(f"class statistics of {args.stats_split} (written to {path}):\n{stats}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(run(main))
