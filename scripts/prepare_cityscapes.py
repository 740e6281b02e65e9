"""Write *_labelTrainIds.png next to every *_labelIds.png of a Cityscapes tree (gtFine, gtCoarse).

    python scripts/prepare_cityscapes.py --root data/cityscapes [--backend auto|cityscapesscripts|ours]

``cityscapesscripts`` (when installed) draws the train-id images from the *_polygons.json files,
as the official ``createTrainIdLabelImgs`` does; ``ours`` maps the *_labelIds.png images through
the official label table. On an intact tree both give identical files (tested). Idempotent:
existing outputs are kept unless --overwrite; every file is written to a temporary name and
renamed, so an interrupted run leaves no half-written image.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

import _root  # noqa: F401  (puts the repository root on sys.path)
from datasets.cityscapes import LABEL_ID_TO_TRAIN_ID, LAYOUT
from utils.cli import ArgumentParser, add_debug_flag, run

LOOKUP = np.full(256, 255, np.uint8)
for _id, _train_id in LABEL_ID_TO_TRAIN_ID.items():
    LOOKUP[_id] = _train_id


def convert_one(args: tuple[Path, str]) -> str:
    """labelIds file -> labelTrainIds file; returns 'written' or 'skipped'."""
    label_ids, backend = args
    out = label_ids.with_name(label_ids.name.replace("_labelIds.png", "_labelTrainIds.png"))
    tmp = out.with_name(f".{out.name}.tmp.png")
    if backend == "cityscapesscripts":
        from cityscapesscripts.preparation.json2labelImg import json2labelImg

        json2labelImg(str(label_ids).replace("_labelIds.png", "_polygons.json"), str(tmp), "trainIds")
    else:
        Image.fromarray(LOOKUP[np.asarray(Image.open(label_ids))]).save(tmp)
    os.replace(tmp, out)
    return "written"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--backend", choices=("auto", "cityscapesscripts", "ours"), default="auto")
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing *_labelTrainIds.png")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    files = sorted(args.root.glob("gtFine/*/*/*_labelIds.png")) + sorted(args.root.glob("gtCoarse/*/*/*_labelIds.png"))
    if not files:
        print(f"no *_labelIds.png under {args.root}/gtFine or gtCoarse. Expected layout:\n{LAYOUT}", file=sys.stderr)
        return 1
    backend = args.backend
    polygons = all(Path(str(f).replace("_labelIds.png", "_polygons.json")).exists() for f in files)
    if backend == "auto":
        backend = "cityscapesscripts" if importlib.util.find_spec("cityscapesscripts") and polygons else "ours"
    if backend == "cityscapesscripts" and not polygons:
        print("the cityscapesscripts backend needs *_polygons.json next to every labelIds file", file=sys.stderr)
        return 1
    todo = [
        f for f in files if args.overwrite or not Path(str(f).replace("_labelIds.png", "_labelTrainIds.png")).exists()
    ]
    print(
        f"{len(files)} labelIds files, {len(files) - len(todo)} already converted, converting {len(todo)} ({backend})"
    )
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for _ in tqdm(pool.map(convert_one, [(f, backend) for f in todo], chunksize=16), total=len(todo), unit="img"):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
