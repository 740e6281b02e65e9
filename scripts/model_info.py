"""Parameter counts and FLOPs of the model a config describes.

    python scripts/model_info.py --config configs/cityscapes/spnet_r101.yaml --size 769 769
    python scripts/model_info.py --config configs/ade20k/spnet_r50.yaml --json model.head_args.sp.num_context=1

The model is built on the ``meta`` device (shapes without memory), so even R101 at 1024x2048 takes
about a second. ``--train`` adds the FLOPs of one training image (train-mode forward with the aux
head, and the backward pass), the unit of a training budget. FLOPs are those
``torch.utils.flop_counter`` counts, convolutions and matrix products at 2 FLOPs per multiply-add;
norms, activations, pooling and interpolation are not counted.
"""

from __future__ import annotations

import argparse
import json
import sys

import _root  # noqa: F401  (puts the repository root on sys.path)
from models.complexity import model_info
from utils.cli import ArgumentParser, add_debug_flag, run
from utils.config import load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config")
    parser.add_argument(
        "--size", nargs=2, type=int, default=(512, 512), metavar=("H", "W"), help="input size for FLOPs"
    )
    parser.add_argument(
        "--train", action="store_true", help="also FLOPs per training image at --size (forward + aux + backward)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    add_debug_flag(parser)
    args = parser.parse_intermixed_args(argv)
    if min(args.size) < 1:
        parser.error(f"--size H W must be at least 1 pixel each, got {args.size[0]} {args.size[1]}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    info = model_info(load_config(args.config, args.overrides), tuple(args.size), train=args.train)
    if args.json:
        print(json.dumps({"config": args.config, **info}, indent=2))
        return
    p = info["parameters"]
    print(f"{args.config}")
    print(f"  parameters  total      {p['total']:>13,}")
    print(f"              backbone   {p['backbone']:>13,}")
    print(f"              head       {p['head']:>13,}")
    print(f"              aux head   {p['aux_head']:>13,}   (training only)")
    print(f"              inference  {p['inference']:>13,}   (total without the aux head)")
    h, w = info["input_size"]
    print(f"  FLOPs at {h}x{w}: {info['flops'] / 1e9:,.1f} G  ({info['flops'] / 2e9:,.1f} G multiply-adds)")
    if args.train:
        print(
            f"  training FLOPs per {h}x{w} image (forward with aux head + backward): "
            f"{info['train_flops_per_image'] / 1e9:,.1f} G"
        )


if __name__ == "__main__":
    sys.exit(run(main))
