"""Parameter counts and FLOPs of the model a config describes; with ``--memory``, the peak memory of a
training step, measured.

    python scripts/model_info.py --config configs/cityscapes/spnet_r101.yaml --size 769 769
    python scripts/model_info.py --config configs/ade20k/spnet_r50.yaml --json model.head_args.sp.num_context=1
    python scripts/model_info.py --config configs/cityscapes/spnet_r101.yaml --memory --batch 2 --size 768 768

The model is built on the ``meta`` device (shapes without memory), so even R101 at 1024x2048 takes
about a second. ``--train`` adds the FLOPs of one training image (train-mode forward with the aux
head, and the backward pass), the unit of a training budget. FLOPs are those
``torch.utils.flop_counter`` counts, convolutions and matrix products at 2 FLOPs per multiply-add;
norms, activations, pooling and interpolation are not counted.

``--memory`` builds the model on ``--device`` (default: the GPU if there is one) and runs two training
steps (forward with the aux head, loss, backward, SGD) on a random batch of ``--batch`` x ``--size``,
with the config's ``train.fast`` / ``train.amp`` / ``train.compile`` and activation checkpointing
(``model.backbone.checkpoint_stages``, ``model.checkpoint_heads``). It reports the peak, on CUDA of the
tensors (``max_memory_allocated``), on the CPU of the process's resident set; the memory held between
steps; and what one step adds to it. So batch and crop can be sized before a long run
(``models.complexity.training_memory``).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import _root  # noqa: F401  (puts the repository root on sys.path)
from models.complexity import model_info, training_memory
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
    parser.add_argument(
        "--memory", action="store_true", help="also measure the peak memory of a training step at --batch x --size"
    )
    parser.add_argument("--batch", type=int, default=2, help="images per training step for --memory")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="for --memory")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    add_debug_flag(parser)
    args = parser.parse_intermixed_args(argv)
    if min(args.size) < 1:
        parser.error(f"--size H W must be at least 1 pixel each, got {args.size[0]} {args.size[1]}")
    if args.batch < 1:
        parser.error(f"--batch must be at least 1, got {args.batch}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    info = model_info(cfg, tuple(args.size), train=args.train)
    if args.memory:
        info["training_memory"] = training_memory(cfg, batch=args.batch, size=tuple(args.size), device=args.device)
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
    if args.memory:
        print(_memory_line(info["training_memory"]))


def _memory_line(m: dict) -> str:
    h, w = m["input_size"]
    what = f"  training, {m['batch']} x {h}x{w} on {m['device']}"
    if m["peak_memory_gib"] is None:
        return f"{what}: peak memory not measurable here"
    return (
        f"{what}: peak memory {m['peak_memory_gib']:.2f} GiB over two steps ({m['measured']}); "
        f"{m['memory_before_step_gib']:.2f} GiB held between steps, +{m['step_memory_gib']:.2f} GiB in a step "
        f"[{m['settings']}]"
    )


if __name__ == "__main__":
    sys.exit(run(main))
