"""CPU deployment, measured: PyTorch (as eval.py runs it) vs onnxruntime fp32 vs onnxruntime int8.

    python scripts/benchmark_deploy.py --config configs/cityscapes/spnet_r50.yaml --sizes 769 769 512 512 \\
        data.root=data/synthetic_cityscapes
    python scripts/benchmark_deploy.py --config configs/demo.yaml --checkpoint work_dirs/demo/best.pth --miou

Exports the model to ONNX (dynamic sizes, as scripts/export.py does), quantises it to int8
(onnxruntime's static quantisation, calibrated on the first ``--calibration`` images of the training
split; engine/deploy.py says why this one) and then:

- latency at each of ``--sizes`` (batch 1, random input): the three runtimes alternate in every
  one of ``--rounds`` rounds, so a shared machine's load falls on all of them alike; medians, the
  range and each one's ratio to PyTorch. Both runtimes get ``--threads`` threads (default: PyTorch's).
- ``--miou``: the three models' mIoU on the validation split under the config's test protocol
  (``eval``; eval.py's computation, the model swapped for an onnxruntime session), and int8's
  change against fp32, with the verdict: int8 is worth keeping if it loses at most 0.5 mIoU.

Without ``--checkpoint`` the model has its seeded initialisation (enough for latency). ``--out``
writes everything as JSON; the ONNX files go to ``--work-dir`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch

import _root  # noqa: F401  (puts the repository root on sys.path)
from datasets import build_dataset
from engine.deploy import (
    OnnxModel,
    calibration_images,
    latency_table,
    onnx_session,
    quantize_int8,
    runtimes,
    score,
    time_side_by_side,
)
from engine.export import ExportedGraph, example_input, export, prepare_for_export, require
from engine.inference import prepare_for_inference
from models import build_model
from models.weights import load_model_weights
from utils.cli import ArgumentParser, add_debug_flag, run
from utils.config import load_config
from utils.results import write_json

MAX_INT8_LOSS = 0.5  # mIoU points int8 may lose against fp32 to be worth documenting as an option


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config")
    parser.add_argument("--checkpoint", help="weights of the config's model (default: seeded initialisation)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[], metavar="H W", help="latency sizes, H W pairs")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per size (default 5)")
    parser.add_argument("--calibration", type=int, default=20, help="training images for int8 ranges (default 20)")
    parser.add_argument("--miou", action="store_true", help="also the mIoU of the three on the validation split")
    parser.add_argument("--max-images", type=int, help="--miou on the first N validation images only")
    parser.add_argument("--work-dir", help="where the ONNX files go (default: a temporary folder)")
    parser.add_argument("--out", help="write the results to this JSON file")
    parser.add_argument("--threads", type=int, help="threads of both runtimes (default: PyTorch's, the cores)")
    parser.add_argument("--seed", type=int, default=0, help="for the initialisation and the random inputs")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    add_debug_flag(parser)
    args = parser.parse_intermixed_args(argv)
    if len(args.sizes) % 2 or (args.sizes and min(args.sizes) < 32):
        parser.error(f"--sizes takes H W pairs of at least 32 pixels, got {args.sizes}")
    if not args.sizes and not args.miou:
        parser.error("nothing to measure: give --sizes H W (latency) and/or --miou")
    for flag in ("rounds", "calibration", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    args.sizes = list(zip(args.sizes[::2], args.sizes[1::2]))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    require("onnx")
    if args.threads:
        torch.set_num_threads(args.threads)  # onnx_session takes PyTorch's count
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such file; give a .pth of this config's model")
    with torch.random.fork_rng(devices=[]):  # the initialisation, without touching the caller's RNG
        torch.manual_seed(args.seed)
        model = build_model(cfg, load_pretrained=False).eval()
    if args.checkpoint:
        load_model_weights(model, args.checkpoint)
    train_images = build_dataset(cfg, cfg.data.train_split, train=False)  # first: a missing dataset fails fast

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.work_dir or tmp)
        graph = ExportedGraph(prepare_for_export(copy.deepcopy(model), cfg.eval.fast))
        example = example_input(cfg.eval.crop_size, batch=2, preprocessing=False, dtype=torch.float32)
        fp32 = export(graph, "onnx", folder / "model_fp32.onnx", example, dynamic=True)
        int8 = quantize_int8(fp32, folder / "model_int8.onnx", calibration_images(train_images, args.calibration))
        print(f"exported {fp32}, quantised {int8} on {args.calibration} {cfg.data.train_split} images")
        prepared = prepare_for_inference(model, cfg.eval.fast, "cpu")
        onnx_models = {
            "onnxruntime fp32": OnnxModel(onnx_session(fp32)),
            "onnxruntime int8": OnnxModel(onnx_session(int8)),
        }
        results = {"threads": torch.get_num_threads(), "latency": {}, "miou": {}}

        for h, w in args.sizes:
            x = example_input((h, w), batch=1, preprocessing=False, dtype=torch.float32, seed=args.seed)
            sides = runtimes(prepared, cfg.eval.fast.inference_mode, onnx_models, x)
            results["latency"][f"{h}x{w}"] = time_side_by_side(sides, args.rounds)
        if args.sizes:
            print(f"{torch.get_num_threads()} threads, batch 1, {args.rounds} rounds")
            print(latency_table(results["latency"], "pytorch"))

        if args.miou:
            models = {"pytorch": prepared.model, **onnx_models}
            results["miou"] = score(cfg, models, prepared.channels_last, args.max_images)
            change = 100 * (results["miou"]["onnxruntime int8"] - results["miou"]["onnxruntime fp32"])
            keep = change >= -MAX_INT8_LOSS
            print(f"int8 vs fp32: {change:+.2f} mIoU; {'keep' if keep else 'drop'} int8 (limit -{MAX_INT8_LOSS})")
            results["int8_change_miou_points"], results["keep_int8"] = change, keep
    if args.out:
        write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
