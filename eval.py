"""Evaluate a checkpoint the way the paper (or another codebase) did, on one process or many.

    python eval.py --config configs/cityscapes/spnet_r101.yaml --checkpoint work_dirs/cityscapes/spnet_r101/best.pth
    python eval.py --config CFG --checkpoint CKPT --scales 0.5 0.75 1.0 1.25 1.5 1.75        # multi-scale + flip
    python eval.py --config CFG --checkpoint CKPT --profile encoding --scales 0.75 1 1.25 1.5 1.75 2 2.25
    python eval.py --config CFG --checkpoint CKPT --profile mmseg --resize-to 2048 512 --mode whole --no-flip
    python eval.py --config CFG --checkpoint CKPT --split test --save-pred out/ --format cityscapes-submission
    python eval.py --config CFG --checkpoint CKPT --corruption fog --severity 3           # under a corruption
    python eval.py --config CFG --checkpoint CKPT --corruptions all                       # robustness table
    torchrun --nproc_per_node=4 eval.py --config CFG --checkpoint CKPT

The protocol comes from the config's ``eval`` section; flags override it (``utils/protocol.py``
defines both and documents the three profiles). Results: a per-class table, and JSON (``--out``; by
default ``eval_<split>_<protocol>.json`` next to the checkpoint) with the headline mIoU and its
definition, the protocol, the config, the checkpoint's SHA-256 and the timing; beside it,
``<results>.records.npz``: every image's per-class counts (``utils/records.py``), which
``scripts/compare_runs.py`` compares between runs with confidence intervals. Under
``--corruption`` the images are corrupted as read (``datasets/corruptions.py``); ``--corruptions``
evaluates clean and under every named corruption at severities 1-5 with one model load, and prints
and writes the table (``engine/robustness.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from datasets import Corruption, build_dataset
from datasets.cityscapes import TRAIN_ID_TO_LABEL_ID
from datasets.corruptions import CORRUPTIONS, SEVERITIES
from datasets.sampler import ShardSampler
from engine import robustness
from engine.inference import load_for_inference
from utils.cli import ArgumentParser, add_debug_flag, add_protocol_flags, apply_protocol_flags, check_writable, run
from utils.config import config_to_dict, load_config
from utils.distributed import cleanup, init_distributed
from utils.evaluation import evaluate
from utils.inference import AMP_DTYPES
from utils.metrics import ImageCounts, format_table
from utils.records import records_path, save_records
from utils.results import write_json
from utils.visualize import colorize, save_png

FORMATS = ("trainid", "color", "cityscapes-submission")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config of the model and the data")
    parser.add_argument("--checkpoint", help="model weights: best.pth, last.pth, a converted model (required)")
    parser.add_argument("--split", help="default: the config's data.val_split")
    add_protocol_flags(parser)
    parser.add_argument("--max-images", type=int, help="evaluate the first N images only")
    parser.add_argument("--save-pred", type=Path, help="folder for the predicted masks (created if needed)")
    parser.add_argument(
        "--format", choices=FORMATS, default="trainid", help="of the saved predictions (default: %(default)s)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="results JSON, its folder created if needed (default: eval_<split>_<protocol>.json next to the "
        "checkpoint)",
    )
    one = parser.add_mutually_exclusive_group()
    one.add_argument("--corruption", choices=CORRUPTIONS, help="evaluate under this corruption (with --severity)")
    one.add_argument(
        "--corruptions", nargs="+", choices=("all", *CORRUPTIONS), metavar="NAME",
        help=f"clean and under each of these corruptions ('all': {', '.join(CORRUPTIONS)}) at severities 1-5",
    )  # fmt: skip
    parser.add_argument("--severity", type=int, choices=SEVERITIES, help="of --corruption: 1 (mild) to 5")
    parser.add_argument(
        "--corruption-seed",
        type=int,
        default=0,
        metavar="N",
        help="seeds the corruptions' draws, with each image's index (default 0)",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    add_debug_flag(parser)
    args = parser.parse_intermixed_args(argv)
    if args.corruption and args.severity is None:
        parser.error(f"--corruption {args.corruption} needs --severity 1..5")
    if args.severity is not None and not args.corruption:
        parser.error("--severity is the severity of --corruption NAME; add it (or use --corruptions)")
    if args.corruption_seed < 0:
        parser.error(f"--corruption-seed {args.corruption_seed}: must be >= 0")
    if args.corruptions and args.save_pred:
        parser.error("--save-pred keeps the predictions of one evaluation; leave it out with --corruptions")
    if not args.checkpoint and not args.print_protocol:
        parser.error("the following arguments are required: --checkpoint")
    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f"--max-images {args.max_images}: must be >= 1 (leave it out to evaluate every image)")
    return args


def results_path(args: argparse.Namespace, split: str, protocol: Any) -> Path:
    """``--out``, or ``eval_<split>_<protocol>.json`` beside the checkpoint, which is never overwritten with
    the results of another protocol (the name holds its main fields, not every one of them)."""
    if args.out is not None:
        if args.out.is_dir():
            example = args.out / f"eval_{split}.json"
            raise IsADirectoryError(f"--out {args.out} is a folder; name the results file, e.g. {example}")
        return args.out
    suffix = f"_{args.corruption}{args.severity}" if args.corruption else "_corruptions" if args.corruptions else ""
    path = Path(args.checkpoint).with_name(f"eval_{split}_{protocol.slug()}{suffix}.json")
    try:
        earlier = json.loads(path.read_text()).get("protocol_text")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if earlier is not None and earlier != str(protocol):
        raise ValueError(
            f"{path} holds the results of another protocol ({earlier}); name a new results file with --out"
        )
    return path


def prediction_writer(folder: Path, fmt: str, dataset_name: str, palette) -> Any:
    if fmt == "cityscapes-submission" and dataset_name != "cityscapes":
        raise ValueError("--format cityscapes-submission needs a Cityscapes dataset")
    to_label_id = np.zeros(256, np.uint8)  # train id -> label id; nothing else is ever predicted
    for train_id, label_id in TRAIN_ID_TO_LABEL_ID.items():
        to_label_id[train_id] = label_id
    folder.mkdir(parents=True, exist_ok=True)

    def write(sample: dict[str, Any], prediction: torch.Tensor) -> None:
        name, ids = sample["name"][0], prediction.to(torch.uint8).cpu().numpy()
        if fmt == "cityscapes-submission":  # the test server reads label ids, named like the images
            save_png(to_label_id[ids], folder / f"{name}_leftImg8bit.png")
        elif fmt == "color":
            save_png(colorize(ids, palette), folder / f"{name}.png")
        else:
            save_png(ids, folder / f"{name}.png")

    return write


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = apply_protocol_flags(load_config(args.config, args.overrides), args)
    protocol = cfg.eval.only()
    if args.print_protocol:
        print(protocol)
        return 0
    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such file")
    split = args.split or cfg.data.val_split
    args.out = results_path(args, split, protocol)
    check_writable(args.out.parent, "--out")
    if args.save_pred:
        check_writable(args.save_pred, "--save-pred")
    d = init_distributed(cfg.train.device)
    try:
        if cfg.eval.amp == "fp16" and d.device.type != "cuda":
            raise ValueError("eval.amp=fp16 needs a GPU; use eval.amp=bf16 on the CPU")
        return evaluate_checkpoint(cfg, args, split, d)
    finally:
        cleanup()


def evaluate_checkpoint(cfg: Any, args: argparse.Namespace, split: str, d: Any) -> int:
    def dataset_under(corruption: Corruption | None) -> Any:
        dataset = build_dataset(cfg, split, train=False, corruption=corruption)
        return Subset(dataset, range(min(args.max_images, len(dataset)))) if args.max_images else dataset

    corruption = Corruption(args.corruption, args.severity, args.corruption_seed) if args.corruption else None
    dataset = dataset_under(corruption)
    full = dataset.dataset if isinstance(dataset, Subset) else dataset
    classes, palette, over_all_classes = full.classes, full.palette, full.miou_over_all_classes
    prepared, report = load_for_inference(cfg, args.checkpoint, d.device)
    protocol = cfg.eval.only()
    if d.is_main:
        print(f"protocol: {protocol}", flush=True)  # first, so that no number is read without it
        print(f"{report}\n{prepared.summary}\n{len(dataset)} {split} images on {d.world_size} process(es)", flush=True)
        if corruption is not None:
            print(f"corruption: {corruption.name}, severity {corruption.severity}, seed {corruption.seed}", flush=True)

    sampler = ShardSampler(len(dataset), d.rank, d.world_size)  # the same images under every corruption
    counts = ImageCounts(cfg.model.num_classes, sampler.indices)

    def score(dataset: Any, writer: Any = None, counts: ImageCounts | None = None) -> Any:
        loader = DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=cfg.train.num_workers)
        matrix, _ = evaluate(
            prepared.model, loader, cfg.model.num_classes, d.device, protocol=protocol, mean=cfg.data.mean,
            std=cfg.data.std, amp_dtype=AMP_DTYPES[cfg.eval.amp], channels_last=prepared.channels_last,
            inference_mode=cfg.eval.fast.inference_mode, on_prediction=writer, progress=d.is_main, records=counts,
        )  # fmt: skip
        return matrix

    writer = prediction_writer(args.save_pred, args.format, cfg.data.dataset, palette) if args.save_pred else None
    start = time.perf_counter()
    passes = 1
    if args.corruptions:
        names = robustness.corruption_names(args.corruptions)
        passes += len(names) * len(SEVERITIES)
        results = robustness.sweep(
            lambda c: _scored(score(dataset_under(c)), split).compute(over_all_classes), names, args.corruption_seed,
            log=lambda line: print(line, flush=True) if d.is_main else None,
        )  # fmt: skip
    else:
        matrix = score(dataset, writer, counts)
    seconds = time.perf_counter() - start
    timing = {"seconds": seconds, "evaluations": passes, "seconds_per_image": seconds / max(len(dataset), 1) / passes}
    if not d.is_main:
        return 0
    run_info = dict(
        split=split, num_images=len(dataset), protocol=config_to_dict(protocol.resolved()), protocol_text=str(protocol),
        fused=cfg.eval.fast.fold_bn, checkpoint=str(args.checkpoint), checkpoint_sha256=report.sha256,
        checkpoint_iter=report.iteration, train_config=report.config, config_path=str(args.config),
        world_size=d.world_size, device=str(d.device),
        timing=timing, config=config_to_dict(cfg),
    )  # fmt: skip
    if args.corruptions:
        print(robustness.format_table(results))
        seed = {"corruption_seed": args.corruption_seed, "severities": list(SEVERITIES)}
        print(f"wrote {write_json(args.out, {**results, **seed, **run_info})}")
        return 0
    if corruption is not None:
        run_info.update(corruption=corruption.name, severity=corruption.severity, corruption_seed=corruption.seed)
    if int(matrix.matrix.sum()) == 0:  # a test split: predictions only
        where = f"predictions written to {args.save_pred}" if args.save_pred else "add --save-pred DIR to keep them"
        print(f"{split}: no labels to score; {where}")
        print(f"wrote {write_json(args.out, {'scored': False, 'predictions': str(args.save_pred), **run_info})}")
        return 0
    metrics = matrix.compute(over_all_classes)
    print(format_table(metrics, classes, protocol))
    iou, accuracy = metrics.pop("iou"), metrics.pop("accuracy")  # NaN (a class that never occurs) -> null
    results = {"scored": True, **metrics, "per_class_iou": dict(zip(classes, iou))}
    results["per_class_accuracy"] = dict(zip(classes, accuracy))
    print(
        f"result: mIoU {100 * metrics['miou']:.2f}, the {metrics['miou_definition']}; {seconds:.1f} s "
        f"({seconds / max(len(dataset), 1):.2f} s per image)"
    )
    records = save_records(records_path(args.out), counts.records(classes, over_all_classes, protocol.slug()))
    print(f"wrote {write_json(args.out, {**results, **run_info})} and {records} (per-image counts)")
    return 0


def _scored(matrix: Any, split: str) -> Any:
    if int(matrix.matrix.sum()) == 0:
        raise ValueError(f"--corruptions scores the predictions, and the {split} split has no labels; use --split val")
    return matrix


if __name__ == "__main__":
    sys.exit(run(main))
