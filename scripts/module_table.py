"""Cost of every context head, block attention and comparison config: the tables of docs/modules.md.

    python scripts/module_table.py                           # prints the tables
    python scripts/module_table.py --no-latency --size 512 512
    python scripts/module_table.py --out docs/modules.md     # writes them into the doc

Heads are measured on the stage-4 feature of a ``--size`` crop at output stride 8 (769x769, the
Cityscapes crop, by default: a 2048 x 97 x 97 feature, the input of the head), 19 classes; block
attentions on their SPNet insertion point in stage 4 (512 channels at that size: after conv2 of a
ResNet-50 block). Parameters and FLOPs are counted on the ``meta`` device (FLOPs:
``torch.utils.flop_counter``, 2 per multiply-add; convolutions and matrix products only, so
elementwise gates, pooling and softmax count 0). Latency: batch 1, eval mode, no grad, on this
machine's CPU, the median of ``--repeats`` runs after ``--warmup`` runs. The whole-model tables
count the comparison configs (ADE20K at 512x512, Cityscapes at 769x769) as ``scripts/model_info.py``
does.

With ``--out``, the tables replace what stands between the ``module_table`` markers of that file,
so the text around them stays hand-written; without it they are only printed.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from _root import ROOT  # (puts the repository root on sys.path)
from models import BLOCK_ATTENTION, HEADS
from models.complexity import count_parameters, model_info
from utils.cli import ArgumentParser, add_debug_flag, run
from utils.config import load_config
from utils.profiling import count_flops

BEGIN, END = "<!-- module_table:begin -->", "<!-- module_table:end -->"
HEAD_ROWS = {  # row -> (HEADS key, arguments); the sp rows are SPNet's SP head with 1 and 2 MPMs
    "fcn": ("fcn", {}),
    "sp (1 MPM)": ("sp", {"num_context": 1}),
    "sp (2 MPMs, SPNet)": ("sp", {}),
    **{name: (name, {}) for name in sorted(HEADS) if name not in ("fcn", "sp")},
}
MODEL_TABLES = {  # title -> (configs, input size)
    "ADE20K, R50, head changed": ("configs/ade20k/compare/head_*.yaml", (512, 512)),
    "ADE20K, R50, block attention changed": ("configs/ade20k/compare/attention_*.yaml", (512, 512)),
    "Cityscapes, R101, test-set pair": ("configs/cityscapes/[ps]*_r101.yaml", (769, 769)),
}


def feature_size(crop: tuple[int, int]) -> tuple[int, int]:
    """Stage-4 feature size of a ``crop`` at output stride 8: three stride-2 steps (stem conv, max-pool,
    stage 2), each ``ceil(n / 2)``."""
    return (math.ceil(crop[0] / 8), math.ceil(crop[1] / 8))


def latency(module: nn.Module, inputs: list[torch.Tensor], repeats: int, warmup: int) -> float:
    """Median seconds of ``module(*inputs)`` (eval, no grad) after ``warmup`` untimed runs."""
    module.eval()
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            module(*inputs)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    build: Callable[[], nn.Module],
    shapes: list[tuple[int, ...]],
    *,
    repeats: int,
    warmup: int,
    wrap: bool = False,
) -> dict:
    """Parameters and FLOPs (meta device) and, if ``repeats``, CPU latency of ``build()`` on ``shapes``."""
    with torch.device("meta"):
        module = build()
    inputs = [torch.zeros(s, device="meta") for s in shapes]
    call = (lambda *xs: module(list(xs))) if wrap else module  # heads take a list of features
    module.eval()
    with torch.no_grad():
        flops = count_flops(lambda: call(*inputs))
    row = {"parameters": count_parameters(module), "flops": flops, "seconds": None}
    if repeats:
        module = build()
        real = [torch.randn(s) for s in shapes]
        row["seconds"] = latency(_ListInput(module) if wrap else module, real, repeats, warmup)
    return row


class _ListInput(nn.Module):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        return self.head(list(features))


def head_rows(channels: int, size: tuple[int, int], classes: int, repeats: int, warmup: int) -> dict[str, dict]:
    stages = (channels // 8, channels // 4, channels // 2, channels)
    rows = {}
    for row, (name, args) in HEAD_ROWS.items():
        rows[row] = measure(
            lambda name=name, args=args: HEADS[name](stages, classes, **args),
            [(1, channels, *size)],
            repeats=repeats,
            warmup=warmup,
            wrap=True,
        )
        print(f"head {row}: {rows[row]}", file=sys.stderr, flush=True)
    return rows


def attention_rows(channels: int, size: tuple[int, int], repeats: int, warmup: int) -> dict[str, dict]:
    rows = {}
    for name, cls in sorted(BLOCK_ATTENTION.items()):
        rows[name] = measure(lambda cls=cls: cls(channels), [(1, channels, *size)], repeats=repeats, warmup=warmup)
        print(f"attention {name}: {rows[name]}", file=sys.stderr, flush=True)
    return rows


def model_rows(pattern: str, size: tuple[int, int]) -> dict[str, dict]:
    rows = {}
    for path in sorted(ROOT.glob(pattern)):
        info = model_info(load_config(path, ["model.backbone.pretrained=null"]), size)
        rows[str(path.relative_to(ROOT))] = info
    return rows


def _table(rows: dict[str, dict], first: str, baseline: str | None = None) -> list[str]:
    """Markdown rows; with a ``baseline`` row, also each row's parameters and FLOPs over it."""
    extra = f" params vs {baseline} | GFLOPs vs {baseline} |" if baseline else ""
    lines = [
        f"| {first} | parameters | GFLOPs | CPU latency |{extra}",
        "|---|---:|---:|---:|" + "---:|" * 2 * bool(extra),
    ]
    for name, r in rows.items():
        seconds = "-" if r["seconds"] is None else f"{r['seconds'] * 1000:,.0f} ms"
        line = f"| {name} | {r['parameters']:,} | {r['flops'] / 1e9:,.1f} | {seconds} |"
        if baseline:
            base = rows[baseline]
            line += f" {(r['parameters'] - base['parameters']) / 1e6:+,.2f} M |"
            line += f" {(r['flops'] - base['flops']) / 1e9:+,.1f} |"
        lines.append(line)
    return lines


def render(args: argparse.Namespace, heads: dict, attentions: dict, models: dict[str, tuple]) -> str:
    command = " ".join(["python scripts/module_table.py", *args.argv])
    crop = "x".join(map(str, args.size))
    h, w = feature_size(args.size)
    cpu = _cpu_name()
    latency_note = (
        f"CPU latency: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, batch 1, median of "
        f"{args.repeats} after {args.warmup} warm-up."
        if args.repeats
        else "CPU latency: not measured (--no-latency)."
    )
    lines = [
        BEGIN,
        f"Generated by `{command}`. {latency_note}",
        "",
        f"**Context heads** on a {args.channels} x {h} x {w} feature (a {crop} crop at output stride 8), "
        f"{args.classes} classes; whole head, classifier included:",
        "",
        *_table(heads, "head (`model.head`)", "fcn"),
        "",
        f"**Block attention**, one module on {args.attention_channels} x {h} x {w} (SPNet's insertion point in "
        f"stage 4 of ResNet-50 for a {crop} crop: after conv2); a model has 6 of them with the official placement:",
        "",
        *_table(attentions, "attention (`model.backbone.attention`)"),
        "",
    ]
    for title, (rows, size) in models.items():
        lines += [
            f"**Whole models: {title}** (FLOPs at {size[0]}x{size[1]}; parameters with the aux head, which only "
            "trains, and without it):",
            "",
            "| config | parameters | inference parameters | GFLOPs |",
            "|---|---:|---:|---:|",
        ]
        for path, info in rows.items():
            p = info["parameters"]
            lines.append(f"| `{path}` | {p['total']:,} | {p['inference']:,} | {info['flops'] / 1e9:,.1f} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write(path: Path, block: str) -> None:
    """Replace the marked block of ``path`` (or append it; or create the file)."""
    text = path.read_text() if path.exists() else "# Plug-and-play modules\n\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--channels", type=int, default=2048, help="head input channels (ResNet stage 4)")
    parser.add_argument("--attention-channels", type=int, default=512, help="block attention channels")
    parser.add_argument(
        "--size",
        nargs=2,
        type=int,
        default=(769, 769),
        metavar=("H", "W"),
        help="crop size; heads and attentions run on its stage-4 feature at output stride 8 (default: 769 769)",
    )
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per module (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-latency", dest="repeats", action="store_const", const=0, help="skip the CPU timing")
    parser.add_argument(
        "--out", type=Path, help="write the tables between the module_table markers of this file (docs/modules.md)"
    )
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if min(args.size) < 1:
        parser.error(f"--size H W must be at least 1 pixel each, got {args.size[0]} {args.size[1]}")
    args.argv = sys.argv[1:] if argv is None else list(argv)  # for the command line written into the doc
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    feature = feature_size(args.size)
    heads = head_rows(args.channels, feature, args.classes, args.repeats, args.warmup)
    attentions = attention_rows(args.attention_channels, feature, args.repeats, args.warmup)
    models = {title: (model_rows(pattern, msize), msize) for title, (pattern, msize) in MODEL_TABLES.items()}
    block = render(args, heads, attentions, models)
    if args.out is None:
        print(block)
    else:
        write(args.out, block)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(run(main))
