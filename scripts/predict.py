"""Segment any images: writes <name>.png (train ids), <name>_color.png (palette over the image, a legend of
the classes present beneath) and, with --save-probs, <name>_probs.npy (class probabilities, float16 C x H x W).

    python scripts/predict.py --config configs/demo.yaml --checkpoint work_dirs/demo/best.pth \\
        --input data/synthetic_cityscapes/leftImg8bit/val --output predictions/
    python scripts/predict.py --config CFG --checkpoint CKPT --input photo.jpg --output out/ --scales 0.75 1 1.25

Takes the same protocol flags as eval.py (profile, mode, crop, stride, scales, flip, base size, fuse) and
runs the same inference code. No labels needed; --input is an image or a folder, searched
recursively for .jpg, .jpeg and .png (not under --output, when it lies inside --input: those are
predictions). The output mirrors the input's subfolders, so images that share a name in different
folders never overwrite each other; an output that would replace an input is refused, and a symbolic
link at an output path is replaced by the file, never written through. Images over Pillow's
decompression-bomb limit (178,956,970 pixels) are refused; --max-pixels sets another limit. Images over
--tile-above pixels run in bands of windows, in memory bounded by their width (--tile / --no-tile: always
/ never); the predictions are the same (docs/inference.md).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import _root  # noqa: F401  (puts the repository root on sys.path)
from datasets.base import read_image
from datasets.folder import IMAGE_SUFFIXES
from engine.segmenter import TILE_ABOVE, Segmenter, to_probabilities
from utils.cli import ArgumentParser, add_debug_flag, add_protocol_flags, apply_protocol_flags, check_writable, run
from utils.config import load_config
from utils.inference import tiling_problem
from utils.results import atomic_npy
from utils.visualize import overlay_picture, save_png


def find_images(path: Path, output: Path | None = None) -> list[Path]:
    """``path`` itself, or the images in the folder ``path`` and its subfolders, except those under
    ``output`` when it lies inside ``path``: they are the predictions of an earlier run, not inputs."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"--input {path}: no such file or folder")
    try:
        inner = output.resolve().relative_to(path.resolve()).parts if output is not None else ()
    except ValueError:  # not inside
        inner = ()

    def is_input(p: Path) -> bool:
        return p.suffix.lower() in IMAGE_SUFFIXES and not (inner and p.relative_to(path).parts[: len(inner)] == inner)

    images = sorted(p for p in path.rglob("*") if is_input(p))
    if not images:
        raise FileNotFoundError(f"--input {path}: no {'/'.join(IMAGE_SUFFIXES)} images in it")
    return images


def output_paths(images: list[Path], input_root: Path, output: Path) -> list[tuple[Path, Path]]:
    """(mask, overlay) paths mirroring each image's place under ``input_root``; refuses to overwrite inputs
    and two images whose outputs share a name (``a.png`` and ``a.jpg``; ``x.png`` and ``x_color.png``)."""
    base = input_root.parent if images == [input_root] else input_root  # one image file, or a folder
    if output.resolve() == base.resolve():
        raise ValueError(f"--output {output} is the input folder: predictions would mix with (and replace) the images")
    pairs, written_by = [], {}
    for image in images:
        stem = output / image.relative_to(base).with_suffix("")
        pair = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + "_color.png")
        for path in pair:
            if path in written_by:
                raise ValueError(
                    f"--input: {written_by[path]} and {image} would both write {path}; rename one of them "
                    "or predict them into separate --output folders"
                )
            written_by[path] = image
        pairs.append(pair)
    inputs = {p.resolve() for p in images}
    clash = [str(p) for pair in pairs for p in pair if p.resolve() in inputs]
    if clash:
        raise ValueError(
            f"--output {output}: writing there would overwrite input images (e.g. {clash[0]}); choose another folder"
        )
    return pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--input", required=True, type=Path, help="an image or a folder of images")
    parser.add_argument("--output", required=True, type=Path)
    add_protocol_flags(parser)
    parser.add_argument(
        "--alpha", type=float, default=0.5, help="opacity of the colours over the image, 0 to 1 (default: %(default)s)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--tile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the sliding window in bands, in memory bounded by the image's width (default: above "
        "--tile-above pixels, when the protocol allows it: one scale, the image at its own size)",
    )
    parser.add_argument(
        "--tile-above", type=int, default=TILE_ABOVE, help="pixels above which images are tiled (default: %(default)s)"
    )
    parser.add_argument(
        "--save-probs",
        action="store_true",
        help="also write <name>_probs.npy: class probabilities, float16 (C, H, W), summing to 1 per pixel",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="refuse larger images (default: data.max_image_pixels, else Pillow's decompression-bomb limit, "
        "178,956,970)",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    add_debug_flag(parser)
    args = parser.parse_intermixed_args(argv)
    if not 0 <= args.alpha <= 1:
        raise ValueError(f"--alpha {args.alpha:g}: must be between 0 (the image only) and 1 (the colours only)")
    if args.tile_above < 1:
        raise ValueError(f"--tile-above {args.tile_above}: must be at least 1 (pixels)")
    if args.max_pixels is not None and args.max_pixels < 1:
        raise ValueError(f"--max-pixels {args.max_pixels}: must be at least 1")
    return args


def parse_device(name: str) -> torch.device:
    """``--device`` as a device this machine has."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: not a device predict.py runs on; use --device cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: torch sees no GPU (torch.cuda.is_available() is False); use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: torch sees {torch.cuda.device_count()} GPU(s); use cuda:0 to cuda:N-1")
    return device


def predict(segmenter: Segmenter, image: torch.Tensor, tile: bool | None, probs_path: Path | None) -> np.ndarray:
    """Class ids (H, W) uint8 of ``image``, band by band; their probabilities written to ``probs_path`` as
    the bands come (a float16 .npy memory map: the whole array is never held)."""
    height, width = image.shape[-2:]
    ids = np.empty((height, width), np.uint8)
    with contextlib.ExitStack() as stack:
        shape = (segmenter.num_classes, height, width)
        probs = stack.enter_context(atomic_npy(probs_path, shape, np.float16)) if probs_path else None
        for top, scores in segmenter.bands(image, tile):
            rows = slice(top, top + scores.shape[1])
            ids[rows] = scores.argmax(0).to(torch.uint8).cpu().numpy()
            if probs is not None:
                probs[:, rows] = to_probabilities(scores).half().cpu().numpy()
    return ids


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = apply_protocol_flags(load_config(args.config, args.overrides), args)
    protocol = cfg.eval.only()
    if args.print_protocol:
        print(protocol)
        return 0
    device = parse_device(args.device)  # everything a user can get wrong is checked before the model loads
    if cfg.eval.amp == "fp16" and device.type != "cuda":
        raise ValueError("eval.amp=fp16 needs a GPU; use eval.amp=bf16 on the CPU")
    images = find_images(args.input, args.output)
    outputs = output_paths(images, args.input, args.output)
    check_writable(args.output, "--output")
    segmenter = Segmenter(cfg, args.checkpoint, device=device, protocol=protocol, tile_above=args.tile_above)
    print(f"{segmenter.report}\n{segmenter.prepared.summary}")
    print(f"protocol: {protocol}")
    max_pixels = args.max_pixels or cfg.data.max_image_pixels
    for path, (mask_path, overlay_path) in tqdm(list(zip(images, outputs)), unit="img", disable=None):
        raw = read_image(path, max_pixels, "--max-pixels")
        height, width = raw.shape[-2:]
        problem = tiling_problem(protocol, height, width)
        if args.tile and problem:
            raise ValueError(f"--tile: {path}: {problem}")
        probs_path = mask_path.with_name(mask_path.stem + "_probs.npy") if args.save_probs else None
        prediction = predict(segmenter, raw, args.tile, probs_path)
        save_png(prediction, mask_path)  # replaces a symbolic link planted there, never writes through it
        picture = overlay_picture(
            raw.permute(1, 2, 0).numpy(), prediction, segmenter.palette, segmenter.classes, args.alpha
        )
        save_png(picture, overlay_path)
    per_image = 3 if args.save_probs else 2
    print(f"wrote {per_image * len(images)} files to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
