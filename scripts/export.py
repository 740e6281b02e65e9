"""Export a trained model for deployment: ONNX, TorchScript or a torch.export program, checked against PyTorch.

    python scripts/export.py --config configs/demo.yaml --checkpoint work_dirs/demo/best.pth \\
        --format onnx --dynamic --verify --output demo.onnx
    python scripts/export.py --config CFG --checkpoint CKPT --format exported-program --dynamic --output model.pt2
    python scripts/export.py --config CFG --checkpoint CKPT --format torchscript --size 769 769 --output model.ts

The graph takes the normalised (N, 3, H, W) float image (RGB in [0, 1], minus ``data.mean``, over
``data.std``) and returns the logits (N, num_classes, H, W) at input size; ``--with-preprocessing``
takes the (N, 3, H, W) uint8 RGB image instead and normalises inside the graph. The model is folded
and prepared as eval.py runs it (engine/export.py). Without ``--dynamic`` the graph is fixed to
``--size`` (default: the config's ``eval.crop_size``) and batch 1; with it, batch, height and width
are free. ``--fp16`` exports in half precision.

``--verify`` runs the written file (onnxruntime for ONNX, torch for the others) and the PyTorch model
on a random input of each ``--verify-sizes`` (default with ``--dynamic``: 97x113, 512x512, 769x769,
1024x2048 for models tested on crops of 512 or more, else 97x113, 256x256, 256x512, 321x479; without
it, ``--size``), prints the largest |logit difference| and the share of pixels whose class agrees,
and fails unless >= 99.99% agree and, in fp32, the logits are within 1e-3. ONNX needs
``pip install -r requirements-export.txt``. docs/deploy.md has the measured checks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import _root  # noqa: F401  (puts the repository root on sys.path)
from engine.export import (
    FORMATS,
    ExportedGraph,
    default_verify_sizes,
    example_input,
    export,
    failures,
    format_checks,
    load_exported,
    prepare_for_export,
    require,
    verify,
)
from models import build_model
from models.weights import load_model_weights
from utils.cli import ArgumentParser, add_debug_flag, run
from utils.config import load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config")
    parser.add_argument("--checkpoint", required=True, help="weights of the config's model (.pth)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="the file to write")
    parser.add_argument("--output", required=True, help="the exported file (exported-program: a .pt2)")
    parser.add_argument("--dynamic", action="store_true", help="batch, height and width free (else fixed)")
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="input size (default eval.crop_size)")
    parser.add_argument("--fp16", action="store_true", help="export in half precision")
    parser.add_argument("--with-preprocessing", action="store_true", help="take uint8 RGB, normalise in the graph")
    parser.add_argument("--verify", action="store_true", help="run the file against PyTorch; fail if they differ")
    parser.add_argument("--verify-sizes", nargs="+", type=int, metavar="H W", help="sizes for --verify, H W pairs")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    add_debug_flag(parser)
    args = parser.parse_intermixed_args(argv)
    if args.size and min(args.size) < 32:
        parser.error(f"--size H W must be at least 32 pixels each, got {args.size[0]} {args.size[1]}")
    if args.verify_sizes:
        if len(args.verify_sizes) % 2 or min(args.verify_sizes) < 32:
            parser.error(f"--verify-sizes takes H W pairs of at least 32 pixels, got {args.verify_sizes}")
        args.verify_sizes = list(zip(args.verify_sizes[::2], args.verify_sizes[1::2]))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    require(args.format)
    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such file; give a .pth of this config's model")
    size = tuple(args.size or cfg.eval.crop_size)
    sizes = args.verify_sizes or (default_verify_sizes(cfg.eval.crop_size) if args.dynamic else [size])
    if not args.dynamic and any(tuple(s) != size for s in sizes):
        raise ValueError(f"--verify-sizes: without --dynamic the graph runs at --size {size[0]} {size[1]} only")

    model = build_model(cfg, load_pretrained=False)
    load_model_weights(model, args.checkpoint)
    stats = (cfg.data.mean, cfg.data.std) if args.with_preprocessing else (None, None)
    graph = ExportedGraph(prepare_for_export(model, cfg.eval.fast), *stats)
    dtype = torch.float16 if args.fp16 else torch.float32
    graph.to(dtype)
    # batch 2: torch.export would fix a batch of 1 as a constant
    example = example_input(size, batch=2 if args.dynamic else 1, preprocessing=args.with_preprocessing, dtype=dtype)
    output = export(graph, args.format, args.output, example, dynamic=args.dynamic)
    shape = "N x 3 x H x W" if args.dynamic else f"1 x 3 x {size[0]} x {size[1]}"
    contract = "uint8 RGB" if args.with_preprocessing else f"normalised {'fp16' if args.fp16 else 'fp32'}"
    print(f"wrote {output} ({args.format}): {contract} {shape} -> logits at input size")

    if args.verify:
        run_exported = load_exported(output, args.format)
        checks = verify(run_exported, graph, sizes, preprocessing=args.with_preprocessing, dtype=dtype)
        print(format_checks(checks))
        bad = failures(checks, fp32=not args.fp16)
        if bad:
            raise ValueError(f"--verify: {output} does not compute what the PyTorch model does: {'; '.join(bad)}")
        print("verify: passed")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
