"""Time the model of a config: inference or training steps per second on random input.

    python scripts/benchmark.py --config configs/cityscapes/spnet_r101.yaml --size 769 769 --mode inference
    python scripts/benchmark.py --config configs/demo.yaml --size 256 512 --batch 4 --mode train --iters 5
    python scripts/benchmark.py --config configs/cityscapes/spnet_r50.yaml --device cuda --amp fp16 --channels-last
    python scripts/benchmark.py --config configs/cityscapes/spnet_r50.yaml --mode protocol --size 1024 2048
    python scripts/benchmark.py --config configs/cityscapes/spnet_r50.yaml --size 769 769 --compare-fuse

``--fuse`` times the model after ``fold_model`` (conv+BN pairs folded, as ``eval.py`` runs it);
``--compare-fuse`` times the plain and the folded model side by side in one process, alternating one
iteration of each, and reports both medians, their ratio and the largest difference of the logits.

``--mode protocol`` times the config's test protocol (``eval`` section: sliding window, flip, scales)
on one image of ``--size``, the way eval.py runs it; ``--window-batch`` overrides how many windows
go through the model at once.

Reports the median time per iteration after ``--warmup`` untimed iterations (the first ones pay
for memory allocation and kernel selection), images per second, and peak GPU memory on CUDA.
A training step is forward, cross-entropy on "out" + 0.4 x "aux", backward and an SGD step.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import build_model  # noqa: E402
from models.modules import fold_model  # noqa: E402
from utils.cli import add_debug_flag, run  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.inference import AMP_DTYPES, Protocol, infer  # noqa: E402


def benchmark(
    cfg,
    *,
    size: tuple[int, int],
    batch: int = 1,
    mode: str = "inference",
    iters: int = 10,
    warmup: int = 2,
    device: str = "cpu",
    amp: str = "none",
    channels_last: bool = False,
    window_batch: int | None = None,
    fuse: bool = False,
) -> dict:
    if amp == "fp16" and device == "cpu":
        raise ValueError("fp16 autocast is for CUDA; use --amp bf16 on the CPU")
    if fuse and mode == "train":
        raise ValueError("--fuse folds BatchNorm for inference; it does not apply to --mode train")
    model = build_model(cfg, load_pretrained=False).to(device)
    if fuse:
        fold_model(model.eval(), torch.randn(1, 3, 64, 64, device=device))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = torch.randn(batch, 3, *size, device=device).to(memory_format=memory_format)
    target = torch.randint(0, cfg.model.num_classes, (batch, *size), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device, enabled=amp == "fp16")
    dtype = AMP_DTYPES[amp]

    protocol = dataclasses.replace(Protocol.from_config(cfg.eval), window_batch=window_batch or cfg.eval.window_batch)

    def step() -> None:
        if mode == "protocol":
            infer(model, x, protocol, cfg.model.num_classes, mean=cfg.data.mean, std=cfg.data.std, amp_dtype=dtype)
            return
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            outputs = model(x)
            if mode == "train":
                loss = F.cross_entropy(outputs["out"], target)
                if "aux" in outputs:
                    loss = loss + 0.4 * F.cross_entropy(outputs["aux"], target)
        if mode == "train":
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)

    model.train(mode == "train")
    times = []
    with torch.set_grad_enabled(mode == "train"):
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        for i in range(warmup + iters):
            if device.startswith("cuda"):
                torch.cuda.synchronize()  # kernels are asynchronous; time what actually ran
            start = time.perf_counter()
            step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    median = statistics.median(times)
    result = {
        "mode": mode,
        **({"protocol": dataclasses.asdict(protocol)} if mode == "protocol" else {}),
        "size": list(size),
        "batch": batch,
        "device": device if not device.startswith("cuda") else torch.cuda.get_device_name(),
        "amp": amp,
        "channels_last": channels_last,
        "fused": fuse,
        "threads": torch.get_num_threads(),
        "iters": iters,
        "seconds_per_iter": median,
        "images_per_second": batch / median,
    }
    if device.startswith("cuda"):
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def compare_fuse(cfg, *, size: tuple[int, int], iters: int = 10, warmup: int = 2, device: str = "cpu") -> dict:
    """Plain vs folded inference, alternating one timed iteration of each (same weights, same input)."""
    plain = build_model(cfg, load_pretrained=False).to(device).eval()
    with torch.no_grad():  # trained-looking BN statistics, so that folding changes every weight
        for m in plain.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    fused = copy.deepcopy(plain)
    report = fold_model(fused, torch.randn(1, 3, 64, 64, device=device))
    x = torch.randn(1, 3, *size, device=device)
    times: dict[str, list[float]] = {"plain": [], "fused": []}
    outputs = {}
    with torch.no_grad():
        for i in range(warmup + iters):
            for name, model in (("plain", plain), ("fused", fused)):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                outputs[name] = model(x)["out"]
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "size": list(size),
        "device": device if not device.startswith("cuda") else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "iters": iters,
        "folding": str(report),
        "seconds_plain": medians["plain"],
        "seconds_fused": medians["fused"],
        "speedup": medians["plain"] / medians["fused"],
        "max_abs_logit_difference": (outputs["plain"] - outputs["fused"]).abs().max().item(),
        "max_abs_logit": outputs["plain"].abs().max().item(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--size", nargs=2, type=int, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--mode", choices=("inference", "train", "protocol"), default="inference")
    parser.add_argument("--window-batch", type=int, help="protocol mode: windows per forward pass")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=sorted(AMP_DTYPES), default="none")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--fuse", action="store_true", help="fold conv+BN pairs first (inference, protocol)")
    parser.add_argument("--compare-fuse", action="store_true", help="plain vs folded inference, alternating")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a sentence")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    add_debug_flag(parser)
    args = parser.parse_intermixed_args(argv)

    cfg = load_config(args.config, args.overrides)
    if args.compare_fuse:
        r = compare_fuse(cfg, size=tuple(args.size), iters=args.iters, warmup=args.warmup, device=args.device)
        print(json.dumps({"config": args.config, **r}, indent=2) if args.json else _fuse_sentence(args.config, r))
        return
    r = benchmark(
        cfg,
        size=tuple(args.size),
        batch=args.batch,
        mode=args.mode,
        iters=args.iters,
        warmup=args.warmup,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        window_batch=args.window_batch,
        fuse=args.fuse,
    )
    if args.json:
        print(json.dumps({"config": args.config, **r}, indent=2))
        return
    memory = f", peak memory {r['peak_memory_gib']:.2f} GiB" if "peak_memory_gib" in r else ""
    print(
        f"{args.config}: {r['mode']} {r['batch']}x3x{r['size'][0]}x{r['size'][1]} on {r['device']} "
        f"({r['threads']} threads, amp {r['amp']}): {r['seconds_per_iter'] * 1000:.1f} ms/iter, "
        f"{r['images_per_second']:.2f} img/s (median of {r['iters']}){memory}"
    )


def _fuse_sentence(config: str, r: dict) -> str:
    return (
        f"{config}: inference 1x3x{r['size'][0]}x{r['size'][1]} on {r['device']} ({r['threads']} threads), "
        f"alternating, median of {r['iters']}: plain {r['seconds_plain'] * 1000:.1f} ms, folded "
        f"{r['seconds_fused'] * 1000:.1f} ms ({r['speedup']:.2f}x); {r['folding']}; largest logit difference "
        f"{r['max_abs_logit_difference']:.1e} (logits up to {r['max_abs_logit']:.1f})"
    )


if __name__ == "__main__":
    sys.exit(run(main))
