"""Write the synthetic street dataset in a real on-disk format (see datasets/synthetic.py).

    python scripts/make_synthetic.py --format cityscapes --out data/synthetic_cityscapes
    python scripts/make_synthetic.py --format ade20k --out data/synthetic_ade --train 100 --val 20 --size 256 256
    python scripts/make_synthetic.py --format folder --out data/synthetic_folder
    python scripts/make_synthetic.py --format folder-rgb --out data/synthetic_folder_rgb --seed 1  # 6 classes, colours
    python scripts/make_synthetic.py --format pascal_context --out data/synthetic_pcontext --train 20 --val 10

The same arguments always write the same files (every image is seeded by --seed, split and index).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import yaml

import _root  # noqa: F401  (puts the repository root on sys.path)
from datasets.synthetic import CLASSES, FOLDER_RGB_CLASSES, WRITERS
from utils.cli import ArgumentParser, add_debug_flag, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--format", required=True, choices=sorted(WRITERS))
    parser.add_argument("--out", required=True, type=Path, help="dataset root to write")
    parser.add_argument("--train", type=int, default=200, help="training images")
    parser.add_argument("--val", type=int, default=50, help="validation images")
    parser.add_argument("--test", type=int, default=0, help="test images, without labels (cityscapes only)")
    parser.add_argument("--size", nargs=2, type=int, default=(256, 512), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.test and args.format != "cityscapes":
        parser.error("--test is only written in the cityscapes format")
    for flag in ("train", "val", "test"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag} must be 0 or more images, got {getattr(args, flag)}")
    if min(args.size) < 1:
        parser.error(f"--size H W must be at least 1 pixel each, got {args.size[0]} {args.size[1]}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    counts = {"train": args.train, "val": args.val}
    if args.test:
        counts["test"] = args.test
    start = time.perf_counter()
    WRITERS[args.format](args.out, counts, tuple(args.size), seed=args.seed)
    seconds, (height, width) = time.perf_counter() - start, args.size
    print(f"wrote {sum(counts.values())} {height}x{width} images ({args.format}) to {args.out} in {seconds:.1f} s")
    if args.format == "folder":
        print(f"train on it: python train.py --config configs/custom_folder.yaml {folder_overrides(args.out)}")
    if args.format == "folder-rgb":
        overrides = [f"data.root={args.out}", "data.dataset_args={classes: classes.yaml, mask_format: rgb}"]
        overrides.append(f"model.num_classes={len(FOLDER_RGB_CLASSES)}")
        print(f"train on it: python train.py --config configs/custom_folder.yaml {shlex.join(overrides)}")
    if args.format == "pascal_context":
        print(f"check it: python scripts/check_dataset.py --dataset pascal_context --root {shlex.quote(str(args.out))}")


def folder_overrides(root: Path) -> str:
    """The config overrides that read the folder dataset at ``root``, quoted for a POSIX shell."""
    classes = yaml.safe_dump(list(CLASSES), default_flow_style=True, width=1_000_000).strip()
    overrides = [
        "data.dataset=folder",
        f"data.root={root}",
        f"data.dataset_args.classes={classes}",
        f"model.num_classes={len(CLASSES)}",
    ]
    return " ".join(shlex.quote(o) for o in overrides)


if __name__ == "__main__":
    sys.exit(run(main))
