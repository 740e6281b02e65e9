"""Time the input pipeline of a config: images per second per DataLoader worker.

    python scripts/make_synthetic.py --format cityscapes --out /tmp/cs_full --train 20 --val 0 --size 1024 2048
    python scripts/benchmark_data.py --config configs/cityscapes/spnet_r50.yaml data.root=/tmp/cs_full

Runs in the main process, which is what one worker does: decode the image and the mask, map and
check the labels, then the training transforms. Reports the median per image of each part.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import _root  # noqa: F401  (puts the repository root on sys.path)
from datasets import build_dataset
from datasets.base import read_image
from utils.cli import ArgumentParser, add_debug_flag, run
from utils.config import load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--split", help="default: the config's train split")
    parser.add_argument("--images", type=int, default=48, help="samples to time (cycling over the dataset)")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    add_debug_flag(parser)
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)  # a DataLoader worker runs single-threaded
    torch.manual_seed(0)  # the same augmentation parameters on every run
    cfg = load_config(args.config, args.overrides)
    dataset = build_dataset(cfg, args.split or cfg.data.train_split, train=True)
    decode, total = [], []
    for i in (k % len(dataset) for k in range(args.images)):
        start = time.perf_counter()
        read_image(dataset.samples[i][0], dataset.max_pixels)
        dataset.load_mask(i)
        decode.append(time.perf_counter() - start)
        start = time.perf_counter()
        dataset[i]
        total.append(time.perf_counter() - start)
    d, t = statistics.median(decode), statistics.median(total)
    size = tuple(read_image(dataset.samples[0][0], dataset.max_pixels).shape[-2:])
    print(
        f"{args.config} on {len(total)} images of {size[0]}x{size[1]}: decode {d * 1000:.0f} ms, "
        f"transforms {(t - d) * 1000:.0f} ms, total {t * 1000:.0f} ms per image = {1 / t:.1f} images/s per worker"
    )


if __name__ == "__main__":
    sys.exit(run(main))
