"""Time our SPNet against the official implementation, side by side, on the same weights and input.

    git clone https://github.com/Andrew-Qibin/SPNet /path/to/SPNet     # the official code; not a dependency
    python scripts/compare_official.py --official /path/to/SPNet --mode inference --settings exact bf16
    python scripts/compare_official.py --official /path/to/SPNet --mode train --size 256 256 --pairs 7 --json
    python scripts/compare_official.py --official /path/to/SPNet --config configs/cityscapes/spnet_r101.yaml \\
        --device cuda --mode train --size 769 769 --batch 2 --settings exact bf16 fp16 channels-last compile

The official model is imported from ``<official>/models`` (``spnet.py``, ``resnet.py``, ...) as
it is, built with the config's depth, classes and SPM on/off, and its weights (seeded, with
trained-looking BatchNorm statistics) are converted into ours, so both compute the same function.

Each side runs in its own worker process, and the parent alternates them one timed iteration at
a time (official, ours-1, ours-2, ..., then again), so that a drift in machine load hits every side
alike; separate processes because some fast paths are process-wide (``reuse_memory``) and would
otherwise speed the official code up too (``--official-reuse-memory`` gives it them, for a
model-only comparison). The official side runs as its code does: fp32, its own forward (which
computes the auxiliary head in inference too, and twice in training) and its loss.

Our settings: ``plain`` (every fast path off), ``plain-reuse-memory`` (plain, but with memory reuse:
what that process-wide fast path gains alone), ``exact`` (the exact fast paths of ``train.fast`` /
``eval.fast``: inference folds conv+BN), ``bf16`` (exact + bf16 autocast), ``fp16`` (CUDA: exact +
fp16 autocast, gradient scaling in training), ``channels-last`` (exact + channels_last forced on),
``compile`` / ``bf16-compile`` (+ torch.compile; the first, untimed iteration holds the compile time).

Reported per side: median seconds per iteration, images/s, ratio to the official time, peak memory
(CUDA: max allocated; CPU: the worker's peak resident set), GFLOPs per iteration (PyTorch's counter),
seconds of the first iteration (compile), and the largest difference of the inference logits to the
official model's (fp32 settings should be float-rounding small; bf16 / fp16 are labelled as such).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

import _root  # noqa: F401  (puts the repository root on sys.path)
from engine.inference import prepare_for_inference
from models import build_model
from models.convert import convert_official_spnet
from utils.cli import USER_ERRORS, ArgumentParser, add_debug_flag, run
from utils.config import FastPaths, load_config
from utils.fast_paths import apply_fast_paths, inference_context, reuse_freed_memory
from utils.losses import SegmentationLoss
from utils.profiling import count_flops, peak_memory_gib, reset_peak_memory


class Setting(NamedTuple):
    fast: bool  # the exact fast paths other than memory reuse
    reuse_memory: bool  # process-wide: why every side has its own worker
    amp: torch.dtype | None = None
    channels_last: bool | None = None  # None: as the fast paths decide
    compile: bool = False


SETTINGS = {
    "plain": Setting(False, False),
    "plain-reuse-memory": Setting(False, True),  # what memory reuse alone gains over plain
    "exact": Setting(True, True),
    "bf16": Setting(True, True, torch.bfloat16),
    "fp16": Setting(True, True, torch.float16),
    "channels-last": Setting(True, True, None, True),
    "compile": Setting(True, True, None, None, True),
    "bf16-compile": Setting(True, True, torch.bfloat16, None, True),
}


@dataclasses.dataclass
class Job:
    """What one worker builds and times."""

    side: str  # "official" or one of SETTINGS
    official: str
    config: str
    overrides: list[str]
    mode: str
    size: tuple[int, int]
    batch: int
    device: str
    threads: int
    weights: str  # the official worker writes the weights here; ours convert them
    official_reuse_memory: bool = False


def official_package(path: str | Path) -> types.ModuleType:
    """``<path>/models`` imported as ``official_spnet_models`` (our own package is also ``models``)."""
    folder = Path(path).expanduser().resolve() / "models"
    if not (folder / "spnet.py").is_file():
        raise FileNotFoundError(
            f"--official {path}: no models/spnet.py there; pass a clone of https://github.com/Andrew-Qibin/SPNet"
        )
    name = "official_spnet_models"
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    return importlib.import_module(f"{name}.spnet")


def official_arguments(cfg) -> dict[str, Any]:
    """The official ``SPNet(...)`` arguments for our config; refuses what the official code cannot build."""
    b, m = cfg.model.backbone, cfg.model
    problems = [
        f"{key} = {value!r} (official: {want!r})"
        for key, value, want in (
            ("model.head", m.head, "sp"),
            ("model.aux_head", m.aux_head, "fcn"),
            ("model.norm", m.norm, "bn"),
            ("model.backbone.output_stride", b.output_stride, 8),
            ("model.backbone.deep_stem", b.deep_stem, True),
            ("model.backbone.base_width", b.base_width, 64),
            ("model.backbone.multi_grid", b.multi_grid, (1, 2, 4)),
            ("model.backbone.attention_placement", b.attention_placement, "official"),
            ("model.backbone.block_conv", b.block_conv, None),
        )
        if value != want
    ]
    if b.depth not in (50, 101, 152) or b.stage_blocks is not None:
        problems.append(f"model.backbone.depth = {b.depth} (official: 50, 101 or 152)")
    if b.attention not in ("strip", None):
        problems.append(f"model.backbone.attention = {b.attention!r} (official: strip or null)")
    if problems:
        raise ValueError("the official code cannot build this config: " + "; ".join(problems))
    return dict(nclass=m.num_classes, backbone=f"resnet{b.depth}", spm_on=b.attention == "strip")


class Worker:
    """One side: its model, its step, timed on request (runs in its own process)."""

    def __init__(self, job: Job) -> None:
        torch.set_num_threads(job.threads)
        self.job, self.device = job, torch.device(job.device)
        cfg = load_config(job.config, job.overrides)
        self.num_classes = cfg.model.num_classes
        official = Setting(False, job.official_reuse_memory)  # reuse only with --official-reuse-memory
        setting = SETTINGS.get(job.side, official)
        self.reuse_memory = reuse_freed_memory(setting.reuse_memory) and setting.reuse_memory  # False off glibc
        amp, compiled = setting.amp, setting.compile
        self.amp, self.inference_mode = amp, setting.fast
        generator = torch.Generator().manual_seed(0)
        self.image = torch.randn(job.batch, 3, *job.size, generator=generator).to(self.device)
        self.target = torch.randint(0, self.num_classes, (job.batch, *job.size), generator=generator).to(self.device)
        training = job.mode == "train"
        torch.backends.cudnn.benchmark = training  # both sides, as train.py for its fixed-size crops (CUDA only)
        if job.side == "official":
            self.model, channels_last = self._official(cfg, job).to(self.device), False
        else:
            self.model, channels_last = self._ours(cfg, job, setting)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.image = self.image.contiguous(memory_format=fmt)
        self.logits = self._inference_logits()  # before training steps change the weights
        self.model.train(training)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == torch.float16 and training)
        self.criterion = SegmentationLoss("ce", aux_weight=0.4)
        self.call = self.model
        self.flops = count_flops(self.step)  # eager: the counter does not see inside compiled code
        options = {"freezing": True} if job.mode == "inference" else None  # as eval.py compiles
        self.call = torch.compile(self.model, options=options) if compiled else self.model
        self.channels_last = channels_last

    def _official(self, cfg, job: Job) -> nn.Module:
        spnet = official_package(job.official)
        torch.manual_seed(0)
        model = spnet.SPNet(
            pretrained=None, criterion=nn.CrossEntropyLoss(ignore_index=255), norm_layer=nn.BatchNorm2d,
            **official_arguments(cfg),
        )  # fmt: skip
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():  # trained-looking statistics, so that folding changes every weight
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
                    m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
        torch.save(model.state_dict(), job.weights)
        return model

    def _ours(self, cfg, job: Job, setting: Setting) -> tuple[nn.Module, bool]:
        """Our model on the official weights, with the fast paths of ``setting`` applied as eval.py
        (inference) or train.py (training) applies them; and whether it runs in channels_last."""
        model = build_model(cfg, load_pretrained=False)
        state, _ = convert_official_spnet(torch.load(job.weights, weights_only=True))
        model.load_state_dict(state)
        model = model.to(self.device)
        paths = {f.name: setting.fast for f in dataclasses.fields(FastPaths)}
        channels_last = setting.fast if setting.channels_last is None else setting.channels_last
        fast = FastPaths(**{**paths, "reuse_memory": setting.reuse_memory, "channels_last": channels_last})
        if job.mode == "inference":
            prepared = prepare_for_inference(model, fast, self.device)
            return prepared.model, prepared.channels_last
        memory_format = apply_fast_paths(model, fast, self.device)
        return model, memory_format == torch.channels_last

    def _inference_logits(self) -> torch.Tensor:
        self.model.eval()
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            out = self.model(self.image)
        return (out if torch.is_tensor(out) else out["out"]).float().cpu()

    def step(self) -> None:
        if self.job.mode == "inference":
            amp = torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)
            with inference_context(self.inference_mode), amp:
                self.call(self.image)
            return
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            if self.job.side == "official":  # its training forward returns (prediction, main loss, aux loss)
                _, main, aux = self.call(self.image, self.target)
                loss = main + 0.4 * aux
            else:
                loss, _ = self.criterion(self.call(self.image), self.target, float(self.target.numel()))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def timed_step(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        self.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def _serve(job: Job, conn) -> None:
    try:
        worker = Worker(job)
        conn.send(("ready", None))
        while True:
            command = conn.recv()
            if command == "step":
                conn.send(("time", worker.timed_step()))
            elif command == "reset-peak":
                reset_peak_memory(worker.device)
                conn.send(("ok", None))
            elif command == "report":
                report = dict(flops=worker.flops, peak_memory_gib=peak_memory_gib(worker.device),
                              channels_last=worker.channels_last, reuse_memory=worker.reuse_memory,
                              logits=worker.logits.numpy())  # fmt: skip
                conn.send(("report", report))
                return
    except USER_ERRORS as err:  # the parent prints it as a one-line error
        conn.send(("user-error", f"{job.side}: {err}"))
    except Exception:  # a bug: the parent raises it with the worker's traceback
        conn.send(("error", f"{job.side} worker:\n{traceback.format_exc()}"))


def _ask(conn, command: str | None = None):
    if command is not None:
        conn.send(command)
    kind, value = conn.recv()
    if kind == "user-error":
        raise ValueError(value)
    if kind == "error":
        raise RuntimeError(value)
    return value


def _worker_died(sides: list[str], processes: list) -> ValueError:
    """The error for a worker that vanished: most often the kernel's out-of-memory killer (exit -9),
    since every side holds its own model and activations at once."""
    for process in processes:
        process.join(timeout=10)
    dead = [f"{side} (exit code {p.exitcode})" for side, p in zip(sides, processes) if p.exitcode not in (None, 0)]
    return ValueError(
        f"the worker of {', '.join(dead) or 'a side'} died; exit code -9 is usually the out-of-memory killer, "
        "as every side holds its own model and activations: try fewer --settings, a smaller --batch or --size"
    )


def compare(
    *, official: str, config: str, overrides: list[str], mode: str, size: tuple[int, int], batch: int,
    device: str, threads: int, settings: list[str], pairs: int, warmup: int, official_reuse_memory: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Alternate official / ours-per-setting, one timed iteration each, ``pairs`` times after ``warmup``."""
    official_package(official)  # a wrong path fails here, before any process starts
    context = mp.get_context("spawn")
    sides = ["official", *settings]
    with tempfile.TemporaryDirectory() as tmp:
        connections, processes = {}, []
        try:
            for side in sides:  # the official worker first: it writes the weights the others load
                job = Job(side, official, config, list(overrides), mode, tuple(size), batch, device, threads,
                          str(Path(tmp) / "official.pth"), official_reuse_memory)  # fmt: skip
                parent, child = context.Pipe()
                process = context.Process(target=_serve, args=(job, child), daemon=True)
                process.start()
                processes.append(process)
                connections[side] = parent
                _ask(parent)  # built
            first = {side: _ask(conn, "step") for side, conn in connections.items()}  # compile, allocation
            for _ in range(warmup - 1):
                for conn in connections.values():
                    _ask(conn, "step")
            for conn in connections.values():
                _ask(conn, "reset-peak")
            times: dict[str, list[float]] = {side: [] for side in sides}
            for _ in range(pairs):
                for side, conn in connections.items():
                    times[side].append(_ask(conn, "step"))
            reports = {side: _ask(conn, "report") for side, conn in connections.items()}
        except (EOFError, BrokenPipeError, ConnectionResetError):  # a worker died without a word
            raise _worker_died(sides, processes) from None
        finally:
            for process in processes:
                process.join(timeout=60)
                if process.is_alive():
                    process.kill()
    reference = torch.from_numpy(reports["official"]["logits"])  # numpy: tensors would be shared, not sent
    base = statistics.median(times["official"])
    result: dict[str, Any] = {
        "mode": mode, "size": list(size), "batch": batch, "threads": threads, "pairs": pairs, "warmup": warmup,
        "device": device if not device.startswith("cuda") else torch.cuda.get_device_name(),
        "official_reuse_memory": official_reuse_memory, "sides": {},
    }  # fmt: skip
    for side in sides:
        median = statistics.median(times[side])
        logits = torch.from_numpy(reports[side]["logits"])
        result["sides"][side] = {
            "seconds": median,
            "images_per_second": batch / median,
            "ratio_to_official": median / base,
            "all_seconds": times[side],
            "first_iteration_seconds": first[side],
            "peak_memory_gib": reports[side]["peak_memory_gib"],
            "gflops": reports[side]["flops"] / 1e9,
            "channels_last": reports[side]["channels_last"],
            "reuse_memory": reports[side]["reuse_memory"],
            "max_abs_logit_difference_to_official": (logits - reference).abs().max().item(),
            "precision": "fp32" if side == "official" or SETTINGS[side].amp is None else str(SETTINGS[side].amp),
        }
    result["max_abs_official_logit"] = reference.abs().max().item()
    return result


def sentence(config: str, r: dict[str, Any]) -> str:
    lines = [
        f"{config}: {r['mode']} {r['batch']}x3x{r['size'][0]}x{r['size'][1]} on {r['device']} ({r['threads']} "
        f"threads), alternating, median of {r['pairs']} (official logits up to {r['max_abs_official_logit']:.1f}):"
    ]
    width = max(map(len, r["sides"]))
    for side, s in r["sides"].items():
        memory = f"{s['peak_memory_gib']:.2f} GiB" if s["peak_memory_gib"] is not None else "n/a"
        lines.append(
            f"  {side:{width}s} {s['seconds'] * 1000:8.1f} ms  {s['ratio_to_official']:.2f}x  "
            f"{s['images_per_second']:6.2f} img/s  {s['gflops']:7.1f} GFLOPs  peak {memory}  "
            f"first {s['first_iteration_seconds']:.1f} s  "
            f"logits vs official {s['max_abs_logit_difference_to_official']:.1e} ({s['precision']})"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--official", required=True, help="a clone of github.com/Andrew-Qibin/SPNet")
    parser.add_argument("--config", default="configs/cityscapes/spnet_r50.yaml")
    parser.add_argument("--mode", choices=("inference", "train"), default="inference")
    parser.add_argument("--size", nargs=2, type=int, default=(256, 256), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads per worker")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["exact", "bf16"])
    parser.add_argument("--pairs", type=int, default=5, help="timed rounds, each one iteration of every side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (the first holds any compile)")
    parser.add_argument("--official-reuse-memory", action="store_true", help="give the official worker reuse_memory")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    add_debug_flag(parser)
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cpu" and "fp16" in args.settings:
        raise ValueError("--settings fp16 is for CUDA; use bf16 on the CPU")
    if args.pairs < 1 or args.warmup < 1:
        raise ValueError("--pairs and --warmup must be at least 1")
    official_arguments(load_config(args.config, args.overrides))  # refuse a config the official code lacks
    r = compare(
        official=args.official, config=args.config, overrides=args.overrides, mode=args.mode, size=tuple(args.size),
        batch=args.batch, device=args.device, threads=args.threads, settings=args.settings, pairs=args.pairs,
        warmup=args.warmup, official_reuse_memory=args.official_reuse_memory,
    )  # fmt: skip
    print(json.dumps({"config": args.config, **r}, indent=2) if args.json else sentence(args.config, r))


if __name__ == "__main__":
    sys.exit(run(main))
