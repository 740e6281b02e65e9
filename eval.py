"""Evaluate a checkpoint the way the paper (or another codebase) did, on one process or many.

    python eval.py --config configs/cityscapes/spnet_r101.yaml --checkpoint work_dirs/cityscapes/spnet_r101/best.pth
    python eval.py --config CFG --checkpoint CKPT --scales 0.5 0.75 1.0 1.25 1.5 1.75        # multi-scale + flip
    python eval.py --config CFG --checkpoint CKPT --profile encoding --scales 0.75 1 1.25 1.5 1.75 2 2.25
    python eval.py --config CFG --checkpoint CKPT --profile mmseg --resize-to 2048 512 --mode whole --no-flip
    python eval.py --config CFG --checkpoint CKPT --split test --save-pred out/ --format cityscapes-submission
    torchrun --nproc_per_node=4 eval.py --config CFG --checkpoint CKPT

The protocol comes from the config's ``eval`` section; flags override it (``utils/inference.py``
documents the three profiles). Results: a per-class table, and JSON (``--out``; by default
``eval_<split>.json`` next to the checkpoint) with the metrics, the protocol, the config, the
checkpoint's SHA-256 and the timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from datasets import build_dataset
from datasets.cityscapes import TRAIN_ID_TO_LABEL_ID
from datasets.sampler import ShardSampler
from models import build_model
from models.modules import fold_model
from models.weights import load_model_weights
from utils.cli import ArgumentParser, add_debug_flag, run
from utils.config import FastPaths, config_to_dict, load_config, replace_checked
from utils.distributed import cleanup, init_distributed
from utils.evaluation import evaluate
from utils.fast_paths import (
    resolve_channels_last,
    reuse_freed_memory,
    use_strip_conv_fast_path,
    use_strip_pool_fast_path,
)
from utils.inference import AMP_DTYPES, PROFILES, Protocol
from utils.metrics import format_table
from utils.results import write_json
from utils.visualize import colorize

FORMATS = ("trainid", "color", "cityscapes-submission")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config of the model and the data")
    parser.add_argument("--checkpoint", help="model weights: best.pth, last.pth, a converted model (required)")
    parser.add_argument("--split", help="default: the config's data.val_split")
    add_protocol_args(parser)
    parser.add_argument("--max-images", type=int, help="evaluate the first N images only")
    parser.add_argument("--save-pred", type=Path, help="folder for the predicted masks (created if needed)")
    parser.add_argument(
        "--format", choices=FORMATS, default="trainid", help="of the saved predictions (default: %(default)s)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="results JSON, its folder created if needed (default: eval_<split>.json next to the checkpoint)",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    add_debug_flag(parser)
    args = parser.parse_intermixed_args(argv)
    if not args.checkpoint and not args.print_protocol:
        parser.error("the following arguments are required: --checkpoint")
    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f"--max-images {args.max_images}: must be >= 1 (leave it out to evaluate every image)")
    return args


def add_protocol_args(parser: argparse.ArgumentParser) -> None:
    """The flags that override the config's ``eval`` protocol (shared with scripts/predict.py).

    Unset flags keep the config's ``eval`` section; the shipped Cityscapes / ADE20K configs hold the
    official SPNet protocol (spnet rules, sliding window, flip). ``--print-protocol`` shows the result.
    """
    group = parser.add_argument_group("test protocol (default: the config's eval section; docs/evaluation.md)")
    group.add_argument(
        "--profile",
        choices=tuple(PROFILES),
        help="whose resize / window / flip rules to follow: the official SPNet test code, PyTorch-Encoding or "
        "MMSegmentation (eval.profile)",
    )
    group.add_argument(
        "--mode", choices=("whole", "slide"), help="whole image in one pass, or sliding windows (eval.mode)"
    )
    group.add_argument("--crop", nargs=2, type=int, metavar=("H", "W"), help="sliding window size (eval.crop_size)")
    group.add_argument(
        "--stride",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="window stride (eval.stride; null: the profile's: 2/3 of the crop; mmseg: its configs' for the crop)",
    )
    group.add_argument("--scales", nargs="+", type=float, help="multi-scale test, e.g. 0.5 0.75 1 1.25 (eval.scales)")
    group.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average with the horizontally flipped image (eval.flip; null: spnet/encoding flip, mmseg does not)",
    )
    group.add_argument("--base-size", type=int, help="long side at scale 1.0 (spnet, encoding profiles)")
    group.add_argument(
        "--resize-to",
        nargs=2,
        type=int,
        metavar=("LONG", "SHORT"),
        help="mmseg profile: fit the image into LONG x SHORT keeping its aspect ratio at scale 1.0, as mmseg's "
        "img_scale, e.g. 2048 512 for ADE20K, 2048 1024 for Cityscapes (eval.resize_to)",
    )
    group.add_argument("--window-batch", type=int, help="windows per forward pass (memory)")
    group.add_argument(
        "--print-protocol", action="store_true", help="print the resulting protocol in one line and exit"
    )
    group.add_argument(
        "--fuse",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fold every conv+BatchNorm pair and ACNet block into one conv before inference (eval.fast.fold_bn, "
        "default on; exact up to float rounding, checked on a sample when folding; --no-fuse runs the modules "
        "as trained)",
    )


PROTOCOL_FLAGS = {
    "profile": "profile", "mode": "mode", "crop_size": "crop", "stride": "stride", "scales": "scales", "flip": "flip",
    "base_size": "base_size", "resize_to": "resize_to", "window_batch": "window_batch",
}  # fmt: skip  # eval.<key>: the argparse destination of its flag (--crop, --base-size, ...)


def eval_config(cfg: Any, args: argparse.Namespace) -> Any:
    """The config's eval section with the command-line flags applied, checked as the config's keys are."""
    values = {key: getattr(args, dest) for key, dest in PROTOCOL_FLAGS.items() if getattr(args, dest) is not None}
    sources = {key: "--" + PROTOCOL_FLAGS[key].replace("_", "-") for key in values}
    if args.fuse is not None:
        values["fast"], sources["fast"] = {"fold_bn": args.fuse}, "--fuse"
    return replace_checked(cfg, "eval", values, sources)


@dataclasses.dataclass
class InferenceModel:
    """What ``prepare_for_inference`` made: the module to call, the input memory format, a summary."""

    model: torch.nn.Module
    channels_last: bool
    summary: str

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def prepare_for_inference(
    model: torch.nn.Module, fast: FastPaths, channels_last: bool | None, device: torch.device, *, compile: bool = False
) -> InferenceModel:
    """The eval-mode ``model`` with the fast paths of ``fast`` (``eval.fast`` here, ``train.fast`` for
    validation; utils/fast_paths.py): conv+BN folded in place, strip convs and strip pooling switched, memory kept;
    ``channels_last`` as ``eval.channels_last`` (null: where faster), then compiled if asked."""
    reuse_freed_memory(fast.reuse_memory)
    use_strip_conv_fast_path(model, fast.strip_conv)
    use_strip_pool_fast_path(model, fast.strip_pool)
    if fast.fold_bn:
        example = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
        folding = f"folding: {fold_model(model, example)}"
    else:
        folding = "folding: off (eval.fast.fold_bn=false / --no-fuse)"
    channels_last = resolve_channels_last(channels_last, fast.channels_last, device)
    model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if compile:  # freezing: weights become constants, so inductor prepacks them for its kernels
        model = torch.compile(model, options={"freezing": True})
    summary = f"{folding}\nfast paths: {fast}, channels_last {channels_last}, compile {compile}"
    return InferenceModel(model, channels_last, summary)


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
            Image.fromarray(to_label_id[ids]).save(folder / f"{name}_leftImg8bit.png")
        elif fmt == "color":
            Image.fromarray(colorize(ids, palette)).save(folder / f"{name}.png")
        else:
            Image.fromarray(ids).save(folder / f"{name}.png")

    return write


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = eval_config(load_config(args.config, args.overrides), args)
    if args.print_protocol:
        print(Protocol.from_config(cfg.eval))
        return 0
    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such file")
    split = args.split or cfg.data.val_split
    args.out = args.out or Path(args.checkpoint).with_name(f"eval_{split}.json")
    if args.out.is_dir():
        raise IsADirectoryError(
            f"--out {args.out} is a folder; name the results file, e.g. {args.out / f'eval_{split}.json'}"
        )
    check_writable(args.out.parent, "--out")
    if args.save_pred:
        check_writable(args.save_pred, "--save-pred")
    d = init_distributed(cfg.train.device)
    try:
        if cfg.eval.amp == "fp16" and d.device.type != "cuda":
            raise ValueError("eval.amp=fp16 needs a GPU; use eval.amp=bf16 on the CPU")
        return evaluate_checkpoint(cfg, args, d)
    finally:
        cleanup()


def check_writable(folder: Path, flag: str) -> None:
    """Create ``folder`` and prove it is writable now, before an evaluation that may take hours."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{flag} {folder} is a file, not a folder; choose a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise PermissionError(
            f"{flag}: cannot write into {folder} ({err.strerror or err}); choose another folder"
        ) from err


def evaluate_checkpoint(cfg: Any, args: argparse.Namespace, d: Any) -> int:
    split = args.split or cfg.data.val_split
    dataset = build_dataset(cfg, split, train=False)
    classes, palette = dataset.classes, dataset.palette
    miou_over_all = dataset.miou_over_all_classes
    if args.max_images:
        dataset = Subset(dataset, range(min(args.max_images, len(dataset))))
    model = build_model(cfg, load_pretrained=False)
    report = load_model_weights(model, args.checkpoint)
    e = cfg.eval
    prepared = prepare_for_inference(model.to(d.device).eval(), e.fast, e.channels_last, d.device, compile=e.compile)
    protocol = Protocol.from_config(cfg.eval)
    if d.is_main:
        print(f"protocol: {protocol}", flush=True)  # first, so that no number is read without it
        print(f"{report}\n{prepared.summary}\n{len(dataset)} {split} images on {d.world_size} process(es)", flush=True)
    loader = DataLoader(
        dataset,
        batch_size=1,
        sampler=ShardSampler(len(dataset), d.rank, d.world_size),
        num_workers=cfg.train.num_workers,
    )
    writer = prediction_writer(args.save_pred, args.format, cfg.data.dataset, palette) if args.save_pred else None
    start = time.perf_counter()
    matrix, _ = evaluate(
        prepared.model, loader, cfg.model.num_classes, d.device, protocol=protocol, mean=cfg.data.mean,
        std=cfg.data.std, amp_dtype=AMP_DTYPES[cfg.eval.amp], channels_last=prepared.channels_last,
        inference_mode=cfg.eval.fast.inference_mode, on_prediction=writer,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if not d.is_main:
        return 0
    run_info = dict(
        split=split, num_images=len(dataset), protocol=dataclasses.asdict(protocol), protocol_text=str(protocol),
        fused=cfg.eval.fast.fold_bn, checkpoint=str(args.checkpoint), checkpoint_sha256=report.sha256,
        checkpoint_iter=report.iteration, train_config=report.config, config_path=str(args.config),
        world_size=d.world_size, device=str(d.device),
        timing={"seconds": seconds, "seconds_per_image": seconds / max(len(dataset), 1)}, config=config_to_dict(cfg),
    )  # fmt: skip
    if int(matrix.matrix.sum()) == 0:  # a test split: predictions only
        where = f"predictions written to {args.save_pred}" if args.save_pred else "add --save-pred DIR to keep them"
        print(f"{split}: no labels to score; {where}")
        print(f"wrote {write_json(args.out, {'scored': False, 'predictions': str(args.save_pred), **run_info})}")
        return 0
    metrics = matrix.compute()
    profile_all = protocol.rules.miou_over_all_classes
    results = {
        "scored": True,
        "miou": metrics["miou_all_classes"] if miou_over_all else metrics["miou"],
        "miou_convention": "all classes (absent ones count 0)"
        if miou_over_all
        else "classes present in ground truth or prediction",
        "pixel_accuracy": metrics["pixel_accuracy"],
        "mean_accuracy": metrics["mean_accuracy"],
        "per_class_iou": dict(zip(classes, metrics["iou"])),  # NaN (class never occurs) is written as null
        "miou_present_classes": metrics["miou"],
        "miou_all_classes": metrics["miou_all_classes"],
    }
    if profile_all != miou_over_all:
        results["miou_profile"] = metrics["miou_all_classes"] if profile_all else metrics["miou"]
    results.update(run_info)
    print(format_table(metrics, classes, protocol))
    line = f"mIoU {100 * results['miou']:.2f} ({results['miou_convention']})"
    if "miou_profile" in results:
        line += f"; {protocol.profile} code reports {100 * results['miou_profile']:.2f}"
    print(f"{line}; {seconds:.1f} s ({seconds / max(len(dataset), 1):.2f} s per image)")
    print(f"wrote {write_json(args.out, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
