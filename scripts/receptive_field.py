"""Effective receptive fields (Luo et al., NeurIPS 2016) of one or several models, side by side in a PNG.

    python scripts/receptive_field.py --config configs/demo.yaml --checkpoint work_dirs/demo/last.pth --out erf.png
    python scripts/receptive_field.py --config configs/demo.yaml --random --out erf_init.png --json erf_init.json \\
        --model "Base FCN" model.backbone.attention=null model.head=fcn --model SPNet

Each map is how strongly the logits of the centre output pixel (``--mode pixel``; ``row`` / ``column``:
the whole centre row / column) depend on each input pixel, as |gradient| summed over the colour
channels, averaged over ``--images`` images and normalised to sum 1 (``utils/receptive_field.py``).
The images are the first ones of the config's validation split, centre-cropped to ``--size``, or with
``--random`` images of standard normal noise (seeded). The model runs in eval mode: BatchNorm uses its
running statistics, which at initialisation are mean 0 and variance 1.

Without ``--model`` the config's model is drawn, with ``--checkpoint``'s weights or at its seeded
initialisation. ``--model NAME [checkpoint=PATH] [key=value ...]`` (repeatable) adds a model: the config
with those overrides, the weights of ``checkpoint=PATH`` or a fresh initialisation from ``--seed``.
Overrides given before the first ``--model`` apply to every model. The printed table and ``--json``
give each map's sizes: the pixels holding 50% and 95% of the mass, the 95% region's bounding box, the
standard deviations of the mass along y and x, and their ratio (anisotropy, > 1: taller than wide).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

import _root  # noqa: F401  (puts the repository root on sys.path)
from datasets import build_dataset
from engine.inference import load_for_inference
from models import build_model
from utils.cli import ArgumentParser, add_debug_flag, run
from utils.config import load_config
from utils.receptive_field import MODES, effective_receptive_field, statistics
from utils.results import write_json
from utils.visualize import heatmap, save_png, titled_grid

CHECKPOINT_WORD = "checkpoint="  # in a --model spec; config keys always hold a dot, so it cannot be one


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config")
    parser.add_argument("--checkpoint", help="weights of the config's model (without --model)")
    parser.add_argument(
        "--model",
        nargs="+",
        action="append",
        metavar="NAME [checkpoint=PATH] [key=value]",
        help="a model to draw, named NAME: the config with these overrides (repeatable)",
    )
    parser.add_argument("--images", type=int, default=8, help="images to average over (default 8)")
    parser.add_argument("--size", nargs=2, type=int, default=(256, 256), metavar=("H", "W"), help="image size")
    parser.add_argument("--mode", choices=MODES, default="pixel", help="the centre pixel, row or column")
    parser.add_argument("--random", action="store_true", help="standard normal images instead of the val split")
    parser.add_argument("--seed", type=int, default=0, help="for initialised models and --random images")
    parser.add_argument("--log", type=float, default=3.0, metavar="DECADES", help="colour scale: decades shown")
    parser.add_argument("--linear", action="store_true", help="a linear colour scale instead of --log")
    parser.add_argument(
        "--block", type=int, default=1, metavar="N", help="draw the mean of N x N blocks (the numbers use every pixel)"
    )
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--json", help="also write the maps' statistics to this JSON file")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value, for every model")
    add_debug_flag(parser)
    args = parser.parse_intermixed_args(argv)
    if args.images < 1:
        parser.error(f"--images must be at least 1, got {args.images}")
    if min(args.size) < 1:
        parser.error(f"--size H W must be at least 1 pixel each, got {args.size[0]} {args.size[1]}")
    if args.block < 1:
        parser.error(f"--block must be at least 1, got {args.block}")
    if args.log <= 0:
        parser.error(f"--log must be a positive number of decades, got {args.log}")
    if args.model and args.checkpoint:
        parser.error("--checkpoint is for the config's model alone; with --model write checkpoint=PATH in its spec")
    return args


def model_specs(args: argparse.Namespace) -> list[tuple[str, str | None, list[str]]]:
    """(name, checkpoint or None, overrides) of every model to draw."""
    if not args.model:
        return [(Path(args.config).stem, args.checkpoint, list(args.overrides))]
    specs = []
    for name, *words in args.model:
        checkpoints = [w[len(CHECKPOINT_WORD) :] for w in words if w.startswith(CHECKPOINT_WORD)]
        if len(checkpoints) > 1:
            raise ValueError(f"--model {name}: give one {CHECKPOINT_WORD}PATH, got {len(checkpoints)}")
        overrides = [w for w in words if not w.startswith(CHECKPOINT_WORD)]
        specs.append((name, checkpoints[0] if checkpoints else None, [*args.overrides, *overrides]))
    return specs


def load_model(config: str, checkpoint: str | None, overrides: list[str], seed: int) -> torch.nn.Module:
    """The model with ``checkpoint``'s weights (prepared as for inference), or initialised from ``seed``
    without touching the global random state."""
    cfg = load_config(config, overrides)
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint}: no such file; give a .pth of this config's model")
        return load_for_inference(cfg, checkpoint, "cpu")[0].model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(cfg, load_pretrained=False)


def val_images(config: str, overrides: list[str], count: int, size: tuple[int, int]) -> torch.Tensor:
    """The first ``count`` images of the config's validation split, normalised, centre-cropped to ``size``."""
    cfg = load_config(config, overrides)
    dataset = build_dataset(cfg, cfg.data.val_split, train=False)
    if len(dataset) < count:
        raise ValueError(f"--images {count}: the {cfg.data.val_split} split has only {len(dataset)} images")
    h, w = size
    crops = []
    for i in range(count):
        image = dataset[i]["image"]
        top, left = (image.shape[1] - h) // 2, (image.shape[2] - w) // 2
        if top < 0 or left < 0:
            raise ValueError(
                f"--size {h} {w} is larger than image {i} ({image.shape[1]}x{image.shape[2]}); choose at most that size"
            )
        crops.append(image[:, top : top + h, left : left + w])
    return torch.stack(crops)


def one_by_one(images: torch.Tensor, name: str) -> Iterator[torch.Tensor]:
    for i in tqdm(range(len(images)), desc=name, unit="img", disable=None):
        yield images[i : i + 1]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    specs = model_specs(args)
    size = tuple(args.size)
    if args.random:
        generator = torch.Generator().manual_seed(args.seed)
        images = torch.randn(args.images, 3, *size, generator=generator)
    else:
        images = val_images(args.config, specs[0][2], args.images, size)
    results, tiles, titles = [], [], []
    for name, checkpoint, overrides in specs:
        model = load_model(args.config, checkpoint, overrides, args.seed)
        erf = effective_receptive_field(model, one_by_one(images, name), mode=args.mode)
        stats = statistics(erf)
        results.append({"name": name, "checkpoint": checkpoint, "overrides": overrides, **stats})
        shown = torch.nn.functional.avg_pool2d(erf[None, None], args.block, ceil_mode=True)[0, 0]
        tiles.append(heatmap(shown, None if args.linear else args.log))
        titles.append(f"{name}: 50% in {100 * stats['area50_fraction']:.2g}%")
        print(
            f"{name:<24} 50%: {stats['area50']:>6} px ({100 * stats['area50_fraction']:5.2f}%)  "
            f"95%: {stats['area95']:>6} px ({100 * stats['area95_fraction']:5.2f}%)  "
            f"box95 {stats['height95']}x{stats['width95']}  std y/x {stats['std_y']:.1f}/{stats['std_x']:.1f}  "
            f"anisotropy {stats['anisotropy']:.2f}"
        )
    source = "random normal images" if args.random else f"{args.images} val images"
    scale = "linear" if args.linear else f"log, {args.log:g} decades"
    caption = f"effective receptive field, centre {args.mode}, {source}, {size[0]}x{size[1]}; colour {scale}"
    save_png(titled_grid(tiles, titles, title=caption), args.out)
    if args.json:
        setting = {"config": args.config, "mode": args.mode, "images": args.images, "size": list(size)}
        write_json(args.json, {**setting, "random": args.random, "seed": args.seed, "models": results})


if __name__ == "__main__":
    sys.exit(run(main))
