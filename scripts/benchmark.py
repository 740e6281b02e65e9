"""Time the model of a config: inference, training steps or the test protocol, on random input.

    python scripts/benchmark.py --config configs/cityscapes/spnet_r101.yaml --size 769 769 --mode inference
    python scripts/benchmark.py --config configs/demo.yaml --size 256 256 --batch 8 --mode train --iters 5
    python scripts/benchmark.py --config configs/cityscapes/spnet_r50.yaml --device cuda train.amp=fp16
    python scripts/benchmark.py --config configs/cityscapes/spnet_r50.yaml --mode protocol --size 1024 2048
    python scripts/benchmark.py --config configs/demo.yaml --mode train --batch 8 --versus train.fast=false
    python scripts/benchmark.py --config configs/cityscapes/spnet_r50.yaml --versus eval.fast.fold_bn=false

The config's fast paths are what runs: ``eval.fast`` / ``eval.amp`` / ``eval.compile`` for
``--mode inference`` and ``protocol``, ``train.fast`` / ``train.amp`` / ``train.compile`` for
``--mode train``; switch any of them with an override
(``train.fast=false`` is the plain path). ``--versus OVERRIDE ...`` times a second setting, the
config with those overrides too, alternating one iteration of each in this process (process-wide
settings such as ``reuse_memory`` cannot differ between the two), and reports both medians,
their ratio and the largest difference of the outputs (inference logits; training: the first
step's loss). With ``model.*`` overrides the two sides are two architectures, each with its own
weights, and only their costs are compared (e.g. ``--versus model.head=fcn`` for the SP head's cost).
``scripts/compare_official.py`` times the official code against ours.

``--mode protocol`` times the ``eval`` section's test protocol (sliding window, flip, scales) on one
image of ``--size``, as eval.py runs it; ``--window-batch`` overrides how many windows go through
the model at once.

Reports the median time per iteration after ``--warmup`` untimed iterations (the first one pays
for memory allocation, kernel selection and any compile: reported apart), images per second, peak
memory during the side's timed iterations (CUDA: max allocated; CPU: the process's peak resident
set, which includes memory kept for reuse, the other side's too) and GFLOPs per iteration. A
training step is forward, cross-entropy on "out" + 0.4 x "aux", backward and an SGD step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch

import _root  # noqa: F401  (puts the repository root on sys.path)
from engine.inference import prepare_for_inference
from models import build_model
from models.complexity import random_training_step
from utils.cli import ArgumentParser, add_debug_flag, run
from utils.config import Config, load_config
from utils.fast_paths import inference_context, reuse_freed_memory
from utils.inference import AMP_DTYPES, infer
from utils.profiling import count_flops, peak_memory_gib, reset_peak_memory


@dataclasses.dataclass
class Side:
    """One setting under test: its model, its one-iteration ``step``, and what to apply before it."""

    name: str
    step: Callable[[], None]
    output: Callable[[], float | torch.Tensor]  # what --versus compares
    reuse_memory: bool
    description: str
    compiled: bool
    params: int
    flops: int = 0


def make_side(
    cfg: Config, name: str, *, mode: str, size: tuple[int, int], batch: int, device: str,
    window_batch: int | None = None, state: dict | None = None,
) -> Side:  # fmt: skip
    """Build the model of ``cfg`` (weights from ``state`` when given: both sides of --versus share them)."""
    if mode == "train":
        train_step, losses = random_training_step(cfg, batch=batch, size=size, device=device, state=state), []

        def step() -> None:
            loss = train_step.run()
            if not losses:
                losses.append(loss.item())

        params = sum(p.numel() for p in train_step.model.parameters())
        reuse = cfg.train.fast.reuse_memory
        return Side(name, step, lambda: losses[0], reuse, train_step.description, cfg.train.compile, params)

    torch.manual_seed(0)
    model = build_model(cfg, load_pretrained=False).to(device)
    if state is not None:
        model.load_state_dict(state)
    params = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *size, generator=generator).to(device)
    e = cfg.eval
    if e.amp == "fp16" and torch.device(device).type != "cuda":
        raise ValueError("eval.amp=fp16 is for CUDA; use eval.amp=bf16 on the CPU")
    prepared = prepare_for_inference(model, e.fast, device, compile=e.compile)
    x = x.contiguous(memory_format=prepared.memory_format)
    dtype, logits = AMP_DTYPES[e.amp], []
    protocol = dataclasses.replace(e.only(), window_batch=window_batch or e.window_batch)

    def step() -> None:
        with inference_context(e.fast.inference_mode):
            if mode == "protocol":
                out = infer(prepared.model, x[:1], protocol, cfg.model.num_classes, mean=cfg.data.mean,
                            std=cfg.data.std, amp_dtype=dtype)  # fmt: skip
            else:
                with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
                    out = prepared.model(x)["out"]
        if not logits:
            logits.append(out.float().clone())

    description = prepared.summary.replace("\n", "; ") + f"; amp {e.amp}"
    return Side(name, step, lambda: logits[0], e.fast.reuse_memory, description, e.compile, params)


def time_sides(sides: list[Side], *, iters: int, warmup: int, device: str) -> dict[str, dict]:
    """Alternate one iteration of each side; medians after ``warmup`` rounds, peaks over the timed ones."""
    times: dict[str, list[float]] = {s.name: [] for s in sides}
    first: dict[str, float] = {}
    peaks: dict[str, float | None] = {}
    cuda = torch.device(device).type == "cuda"
    for side in sides:  # FLOPs from an eager, untimed run (the counter does not see into compiled code)
        torch.manual_seed(0)  # dropout: every side's first step draws the same masks (--versus compares them)
        side.flops = count_flops(side.step) if not side.compiled else 0
    for i in range(warmup + iters):
        for side in sides:
            if i == 0:
                reuse_freed_memory(side.reuse_memory)  # process-wide; both sides agree (checked)
            if i >= warmup:
                reset_peak_memory(device)
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            side.step()
            if cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            if i == 0:
                first[side.name] = elapsed
            if i >= warmup:
                times[side.name].append(elapsed)
                peaks[side.name] = max(peaks.get(side.name) or 0.0, peak_memory_gib(device) or 0.0) or None
    return {
        s.name: {
            "seconds_per_iter": statistics.median(times[s.name]),
            "first_iteration_seconds": first[s.name],
            "peak_memory_gib": peaks.get(s.name),
            "gflops_per_iter": s.flops / 1e9 if s.flops else None,
            "params_millions": s.params / 1e6,
            "settings": s.description,
        }
        for s in sides
    }


_REUSE_MESSAGE = (
    "--versus cannot switch fast.reuse_memory: it is process-wide, and glibc cannot go back to its defaults "
    "in-process; time it with scripts/compare_official.py (one process per side), or in two runs"
)


def benchmark(
    cfg: Config, *, size: tuple[int, int], batch: int = 1, mode: str = "inference", iters: int = 10,
    warmup: int = 2, device: str = "cpu", window_batch: int | None = None, versus: Config | None = None,
) -> dict:  # fmt: skip
    """Time ``cfg`` (and ``versus``, alternating, on the same weights and input); see the module docstring."""
    if versus is not None and versus.train.fast.reuse_memory != cfg.train.fast.reuse_memory and mode == "train":
        raise ValueError(_REUSE_MESSAGE)
    if versus is not None and versus.eval.fast.reuse_memory != cfg.eval.fast.reuse_memory and mode != "train":
        raise ValueError(_REUSE_MESSAGE)
    same_model = versus is not None and versus.model == cfg.model
    state = None
    if same_model:  # both sides start from the same weights (model.* overrides: two architectures)
        torch.manual_seed(0)
        state = build_model(cfg, load_pretrained=False).state_dict()
    sides = [
        make_side(c, n, mode=mode, size=size, batch=batch, device=device, window_batch=window_batch, state=state)
        for c, n in ((cfg, "config"), (versus, "versus"))
        if c is not None
    ]
    timed = time_sides(sides, iters=iters, warmup=warmup, device=device)
    r = timed["config"]
    result = {
        "mode": mode,
        **({"protocol": str(cfg.eval)} if mode == "protocol" else {}),
        "size": list(size),
        "batch": batch,
        "device": device if not device.startswith("cuda") else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "iters": iters,
        **r,
        "images_per_second": batch / r["seconds_per_iter"],
    }
    if versus is not None:
        a, b = sides[0].output(), sides[1].output()
        result["versus"] = {**timed["versus"], "images_per_second": batch / timed["versus"]["seconds_per_iter"]}
        result["speedup_of_versus"] = r["seconds_per_iter"] / timed["versus"]["seconds_per_iter"]
        result["same_model"] = same_model  # two architectures: their outputs are not comparable
        if same_model and torch.is_tensor(a):
            result["max_abs_logit_difference"] = (a - b).abs().max().item()
            result["max_abs_logit"] = a.abs().max().item()
        elif same_model:
            result["first_loss"], result["versus"]["first_loss"] = a, b
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--size", nargs=2, type=int, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--mode", choices=("inference", "train", "protocol"), default="inference")
    parser.add_argument("--window-batch", type=int, help="protocol mode: windows per forward pass")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--versus", nargs="+", metavar="OVERRIDE", help="also time the config with these overrides")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a sentence")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    add_debug_flag(parser)
    args = parser.parse_intermixed_args(argv)
    if min(args.size) < 1:
        parser.error(f"--size H W must be at least 1 pixel each, got {args.size[0]} {args.size[1]}")
    for flag in ("batch", "iters", "warmup", "window_batch"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    cfg = load_config(args.config, args.overrides)
    versus = load_config(args.config, [*args.overrides, *args.versus]) if args.versus else None
    r = benchmark(
        cfg, size=tuple(args.size), batch=args.batch, mode=args.mode, iters=args.iters, warmup=args.warmup,
        device=args.device, window_batch=args.window_batch, versus=versus,
    )  # fmt: skip
    if args.json:
        print(json.dumps({"config": args.config, "overrides": args.overrides, "versus_overrides": args.versus, **r},
                         indent=2))  # fmt: skip
        return
    print(_sentence(args.config, r, "config"))
    if versus is not None:
        print(_sentence(f"  versus {' '.join(args.versus)}", r["versus"], None))
        if not r["same_model"]:
            same = "two models (model.* overrides): outputs not compared"
        elif "max_abs_logit_difference" in r:
            difference, largest = r["max_abs_logit_difference"], r["max_abs_logit"]
            same = f"largest logit difference {difference:.1e} (logits up to {largest:.1f})"
        else:
            same = f"first loss {r['first_loss']:.6f} vs {r['versus']['first_loss']:.6f}"
        print(f"  config / versus time: {r['speedup_of_versus']:.2f}x, alternating; {same}")


def _sentence(title: str, r: dict, head: str | None) -> str:
    memory = f", peak memory {r['peak_memory_gib']:.2f} GiB" if r.get("peak_memory_gib") else ""
    flops = f", {r['gflops_per_iter']:.1f} GFLOPs" if r.get("gflops_per_iter") else ""
    flops += f", {r['params_millions']:.2f} M parameters"
    what = (
        f"{r['mode']} {r['batch']}x3x{r['size'][0]}x{r['size'][1]} on {r['device']} ({r['threads']} threads), "
        if head
        else ""
    )
    return (
        f"{title}: {what}{r['seconds_per_iter'] * 1000:.1f} ms/iter, {r['images_per_second']:.2f} img/s "
        f"(median{' of ' + str(r['iters']) if head else ''}; first iteration {r['first_iteration_seconds']:.1f} s)"
        f"{flops}{memory} [{r['settings']}]"
    )


if __name__ == "__main__":
    sys.exit(run(main))
