"""One GPU check: every path that has not run on a GPU yet, in under ten minutes on one CUDA GPU.

    python scripts/gpu_check.py --official /path/to/SPNet                 # on a machine with a CUDA GPU
    python scripts/gpu_check.py --dry-run --official tests/fake_official  # anywhere: CPU stand-ins, tiny sizes
    python scripts/gpu_check.py --only resume_exact eval_fp16             # some of the checks

Each check returns rows: check, status (passed / failed / skipped / needs CUDA), images per second,
peak memory, seconds, and a detail. The script prints them as they come and as a table at the end,
writes them as JSON (``--out``), and exits 1 if any check failed. A check that breaks fails alone.

In this process, on a tiny SPNet, with TF32 off so that fp32 means fp32:

- ``strip_fast_paths``: the exact fast paths (the strip conv's 1-D path, channels_last) and the plain
  path give the logits and gradients of a float64 CPU step;
- ``checkpointing_exact``: activation checkpointing (``model.backbone.checkpoint_stages``,
  ``model.checkpoint_heads``) gives the plain step's outputs, gradients and BatchNorm statistics,
  with dropout on (the CUDA RNG replayed);
- ``ddp_1_process``: an NCCL process group of one, SyncBatchNorm and DistributedDataParallel in
  channels_last: two SGD steps give the plain model's weights.

As users run them, one process each (their JSON read back): ``train.py`` on a synthetic dataset for
``resume_exact`` (4 iterations in one go against 2, stop, resume, 2: bit-identical weights and momentum,
with ``train.deterministic``), ``eval.py`` for ``eval_fp16`` (``eval.amp=fp16`` against fp32 on that
run's checkpoint), ``torchrun`` with 2 processes for ``ddp_2_processes`` (NCCL and SyncBN across 2
GPUs against 1 process with the same global batch; needs 2 GPUs); ``benchmark.py`` for the training
speed of SPNet-R101 at the Cityscapes crop (2 x 768x768), fp32 NCHW, fp32 channels_last, bf16, fp16
with gradient scaling, torch.compile and activation checkpointing; ``model_info.py --memory``; and
``compare_official.py`` against the official code (``--official``: a clone of
https://github.com/Andrew-Qibin/SPNet; without it those rows are skipped), training at 2 x 768x768 and
inference on the 769x769 window.

``--dry-run`` runs them on the CPU where a CPU stand-in exists: the demo model at 64x64 instead of R101
at 768x768, gloo instead of NCCL, GroupNorm instead of SyncBN for the 2-process run, bf16 instead of
fp16; compiling (minutes on a CPU) is skipped. Without ``--dry-run`` it needs a CUDA GPU. Checks run
in the order above, cheapest first; once ``--budget`` seconds have passed the rest are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import _root  # noqa: F401  (puts the repository root on sys.path)
from datasets.synthetic import write_cityscapes
from models import build_model
from utils.cli import ArgumentParser, add_debug_flag, run
from utils.config import FastPaths, load_config
from utils.fast_paths import apply_fast_paths
from utils.results import write_json

ROOT = Path(__file__).resolve().parents[1]
DEMO = "configs/demo.yaml"
R101, R50 = "configs/cityscapes/spnet_r101.yaml", "configs/cityscapes/spnet_r50.yaml"
TINY = [  # a small SPNet (same structure) on 64x128 synthetic images: train.py and the in-process checks
    "model.backbone.depth=50",
    "model.backbone.stage_blocks=[1, 1, 1, 2]",
    "model.backbone.base_width=8",
    "model.backbone.multi_grid=[1, 2]",
    "data.augment.crop_size=[64, 128]",
    "train.amp=none",
]
RUN = [  # a short train.py run: 4 iterations, validation on 2 images at the end
    "train.batch_size=4",
    "train.max_iters=4",
    "train.checkpoint_interval=2",
    "train.eval_interval=0",
    "train.eval_max_images=2",
    "train.eval_pictures=0",
    "train.log_interval=1",
    "train.num_workers=1",
    "optim.warmup_iters=0",
]
NO_DROPOUT = ["model.head_args.sp.dropout=0.0", "model.aux_head_args.fcn.dropout=0.0"]
CHECKPOINTING = ["model.backbone.checkpoint_stages=[3, 4]", "model.checkpoint_heads=true"]
SPEED = {  # benchmark.py training rows: overrides of the config
    "train_fp32_nchw": ["train.amp=none", "train.fast.channels_last=false"],
    "train_fp32": ["train.amp=none"],
    "train_bf16": ["train.amp=bf16"],
    "train_fp16": ["train.amp=fp16"],
    "train_compile": ["train.amp=none", "train.compile=true"],
    "train_checkpointing": ["train.amp=none", *CHECKPOINTING],
}


@dataclasses.dataclass
class Row:
    check: str
    status: str  # passed | failed | skipped | needs CUDA
    images_per_second: float | None = None
    peak_memory_gib: float | None = None
    seconds: float | None = None
    detail: str = ""


@dataclasses.dataclass
class Context:
    """What the checks share: where they run, a scratch folder, the synthetic dataset and the trained run."""

    dry_run: bool
    device: torch.device
    work: Path
    official: str | None
    deadline: float
    gpus: int
    dataset: Path | None = None
    trained: Path | None = None  # last.pth of resume_exact's full run, for eval_fp16

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def synthetic(self) -> Path:
        if self.dataset is None:
            self.dataset = self.work / "synthetic_cityscapes"
            write_cityscapes(self.dataset, {"train": 8, "val": 2}, (64, 128), seed=0)
        return self.dataset


class CheckFailed(Exception):
    """A check ran and found something wrong (or a command it ran failed): its row says what."""


# --- in this process -------------------------------------------------------------------------------


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off and cuDNN deterministic, restored after: fp32 comparisons mean fp32."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    saved += (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:]


def tiny_model(*overrides: str) -> nn.Module:
    """The tiny SPNet, seeded: the same weights every call."""
    torch.manual_seed(0)
    return build_model(load_config(ROOT / DEMO, [*TINY, *overrides]), load_pretrained=False)


def _batch(device: torch.device, memory_format=torch.contiguous_format, dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 65, 97, generator=generator)  # drawn in float32 whatever ``dtype``: the same numbers
    target = torch.randint(0, 19, (2, 65, 97), generator=generator)
    return x.to(device, dtype).contiguous(memory_format=memory_format), target.to(device)


def forward_backward(model: nn.Module, x: torch.Tensor, target: torch.Tensor, seed: int = 1):
    """One train-mode step from the RNG state ``seed`` (CPU and CUDA): logits, gradients, buffers."""
    torch.manual_seed(seed)
    outputs = model.train()(x)
    loss = F.cross_entropy(outputs["out"], target) + 0.4 * F.cross_entropy(outputs["aux"], target)
    loss.backward()
    grads = {name: p.grad.detach().double().cpu() for name, p in model.named_parameters()}
    buffers = {name: b.detach().double().cpu() for name, b in model.named_buffers()}
    return outputs["out"].detach().double().cpu(), grads, buffers


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp(min=1e-12)).item()


def check_strip_fast_paths(ctx: Context) -> list[Row]:
    reference = tiny_model(*NO_DROPOUT).double()  # CUDA dropout draws other masks than the CPU's: none
    x, target = _batch(torch.device("cpu"), dtype=torch.float64)
    ref_logits, ref_grads, _ = forward_backward(reference, x, target)
    errors = {}
    with exact_float32():
        for name, on in (("exact fast paths", True), ("plain path", False)):
            model = tiny_model(*NO_DROPOUT).to(ctx.device)
            fast = FastPaths(**{f.name: on for f in dataclasses.fields(FastPaths)} | {"reuse_memory": False})
            memory_format = apply_fast_paths(model, fast, ctx.device)
            logits, grads, _ = forward_backward(model, *_batch(ctx.device, memory_format))
            errors[name] = (_relative(logits, ref_logits), max(_relative(grads[k], ref_grads[k]) for k in grads))
    detail = "; ".join(f"{name}: logits {a:.1e}, gradients {b:.1e}" for name, (a, b) in errors.items())
    detail += " (relative L2 error against float64 on the CPU; largest over the parameters)"
    # fp32 rounding flips the odd ReLU of the tiny net (up to 2e-2 measured on the CPU); a misread layout: 2.8
    passed = all(a < 1e-4 and b < 5e-2 for a, b in errors.values())
    return [Row("strip_fast_paths", "passed" if passed else "failed", detail=detail)]


def check_checkpointing_exact(ctx: Context) -> list[Row]:
    x, target = _batch(ctx.device)
    with exact_float32():
        plain = forward_backward(tiny_model().to(ctx.device), x, target)
        everything = ["model.backbone.checkpoint_stages=[1, 2, 3, 4]", "model.checkpoint_heads=true"]
        checkpointed = forward_backward(tiny_model(*everything).to(ctx.device), x, target)
    logits = _relative(checkpointed[0], plain[0])
    grads = max(_relative(checkpointed[1][k], plain[1][k]) for k in plain[1])
    buffers = max((checkpointed[2][k] - plain[2][k]).abs().max().item() for k in plain[2])
    tracked = {int(v.item()) for k, v in checkpointed[2].items() if k.endswith("num_batches_tracked")}
    detail = f"logits {logits:.1e}, gradients {grads:.1e}, BatchNorm statistics {buffers:.1e} apart; "
    detail += f"num_batches_tracked {sorted(tracked)} (once per step: [1])"
    passed = logits < 1e-6 and grads < 1e-5 and buffers < 1e-6 and tracked == {1}
    return [Row("checkpointing_exact", "passed" if passed else "failed", detail=detail)]


def check_ddp_one_process(ctx: Context) -> list[Row]:
    cuda = ctx.device.type == "cuda"
    backend = "nccl" if cuda else "gloo"
    if dist.is_initialized():
        raise CheckFailed("this process is in a process group already")
    store = dist.FileStore(str(ctx.work / "ddp_store"), 1)
    dist.init_process_group(backend, store=store, rank=0, world_size=1)
    try:
        with exact_float32():
            results = []
            for distributed in (False, True):
                model = tiny_model(*NO_DROPOUT)
                if distributed and cuda:  # SyncBatchNorm is CUDA-only (DDP refuses it on the CPU)
                    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                model = model.to(ctx.device).to(memory_format=torch.channels_last)
                module = model
                if distributed:
                    device_ids = [torch.cuda.current_device()] if cuda else None
                    model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
                optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
                x, target = _batch(ctx.device, torch.channels_last)
                for seed in (1, 2):
                    forward_backward(model, x, target, seed)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                results.append({k: v.double().cpu() for k, v in module.state_dict().items()})
    finally:
        dist.destroy_process_group()
    plain, ddp = results
    largest = max((ddp[k] - plain[k]).abs().max().item() for k in plain)
    synced = sum(isinstance(m, nn.SyncBatchNorm) for m in module.modules())
    norms = f"{synced} SyncBatchNorm layers" if cuda else "BatchNorm (the CPU stand-in: SyncBatchNorm needs CUDA)"
    detail = f"{backend}, 1 process, {norms}, channels_last: weights after 2 SGD steps "
    detail += f"{largest:.1e} from the plain model's"
    return [Row("ddp_1_process", "passed" if largest < 1e-5 else "failed", detail=detail)]


# --- the scripts, as users run them ------------------------------------------------------------------


def _python(ctx: Context, args: list[str], env: dict[str, str] | None = None, module: str | None = None) -> str:
    """Run a script of this repository (or ``python -m module``) to completion; its stdout."""
    command = [sys.executable, *(["-m", module] if module else []), *args]
    timeout = max(ctx.remaining(), 10.0)
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **(env or {})})  # fmt: skip
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"{module or args[0]} ran past the time budget ({timeout:.0f} s)") from None
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["(no output)"]
        raise CheckFailed(f"{module or args[0]} exited with {result.returncode}: {lines[-1]}")
    return result.stdout


def _json(stdout: str) -> dict:
    """The JSON document a script printed with --json (after anything else it printed)."""
    return json.loads(stdout[stdout.index("{") :])


def _device_args(ctx: Context) -> list[str]:
    return ["--device", ctx.device.type]


def check_speed(ctx: Context, name: str) -> list[Row]:
    overrides = list(SPEED[name])
    if ctx.dry_run and "train.compile=true" in overrides:
        return [Row(name, "skipped", detail="dry run: compiling takes minutes on a CPU (tests/test_train.py does)")]
    note = ""
    if ctx.dry_run and "train.amp=fp16" in overrides:
        overrides, note = ["train.amp=bf16"], "dry run: bf16 in place of fp16; "
    if ctx.dry_run:
        args = ["--config", DEMO, "--size", "64", "64", "--iters", "1", "--warmup", "1"]
    else:
        args = ["--config", R101, "--size", "768", "768", "--iters", "5", "--warmup", "2"]
    r = _json(_python(ctx, ["scripts/benchmark.py", *args, "--mode", "train", "--batch", "2", *_device_args(ctx),
                            "--json", *overrides]))  # fmt: skip
    detail = f"{note}{r['seconds_per_iter'] * 1000:.0f} ms per step of {r['batch']} x {r['size'][0]}x{r['size'][1]}, "
    detail += f"first step {r['first_iteration_seconds']:.1f} s; {r['settings']}"
    return [Row(name, "passed", r["images_per_second"], r["peak_memory_gib"], detail=detail)]


def check_model_info_memory(ctx: Context) -> list[Row]:
    config, size = (DEMO, ["64", "64"]) if ctx.dry_run else (R101, ["768", "768"])
    r = _json(_python(ctx, ["scripts/model_info.py", "--config", config, "--memory", "--batch", "2", "--size", *size,
                            *_device_args(ctx), "--json", "train.amp=none", *CHECKPOINTING]))  # fmt: skip
    m = r["training_memory"]
    detail = f"{m['measured']}: {m['memory_before_step_gib']:.2f} GiB before the step, +{m['step_memory_gib']:.2f} "
    detail += f"GiB in it; {m['settings']}"
    passed = m["step_memory_gib"] is not None and m["step_memory_gib"] > 0
    return [Row("model_info_memory", "passed" if passed else "failed", None, m["peak_memory_gib"], detail=detail)]


def _train(ctx: Context, work_dir: Path, *extra: str, env: dict | None = None, launcher: list[str] | None = None):
    args = ["train.py", "--config", DEMO, f"data.root={ctx.synthetic()}", f"train.work_dir={work_dir}", *TINY, *RUN]
    args += [f"train.device={ctx.device.type}", *extra]
    if launcher:
        return _python(ctx, [*launcher, *args], env=env, module="torch.distributed.run")
    return _python(ctx, args, env=env)


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def check_resume_exact(ctx: Context) -> list[Row]:
    full, resumed = ctx.work / "resume_full", ctx.work / "resume_resumed"
    _train(ctx, full, "train.deterministic=true")
    _train(ctx, resumed, "train.deterministic=true", "--resume", str(full / "iter_0000002.pth"))
    ctx.trained = full / "last.pth"
    a, b = _load(full / "last.pth"), _load(resumed / "last.pth")
    tensors = {f"model.{k}": (v, b["model"][k]) for k, v in a["model"].items()}
    for i, (x, y) in enumerate(zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values())):
        tensors[f"momentum {i}"] = (x["momentum_buffer"], y["momentum_buffer"])
    differ = {k: (x.double() - y.double()).abs().max().item() for k, (x, y) in tensors.items() if not torch.equal(x, y)}
    if differ:
        detail = f"{len(differ)} of {len(tensors)} tensors differ after 2 + 2 iterations (largest "
        detail += f"{max(differ.values()):.1e}): {', '.join(list(differ)[:3])}"
        return [Row("resume_exact", "failed", detail=detail)]
    detail = f"4 iterations against 2 + resume + 2 on {ctx.device.type}, train.deterministic: bit-identical weights "
    return [Row("resume_exact", "passed", detail=detail + "and momentum")]


def check_eval_fp16(ctx: Context) -> list[Row]:
    if ctx.trained is None:  # --only eval_fp16: a run of its own
        _train(ctx, ctx.work / "eval_run")
        ctx.trained = ctx.work / "eval_run" / "last.pth"
    amp = "bf16" if ctx.dry_run else "fp16"
    results = {}
    for setting in ("none", amp):
        out = ctx.work / f"eval_{setting}.json"
        _python(ctx, ["eval.py", "--config", DEMO, "--checkpoint", str(ctx.trained), "--max-images", "2",
                      "--out", str(out), f"data.root={ctx.synthetic()}", *TINY, f"eval.amp={setting}"])  # fmt: skip
        results[setting] = json.loads(out.read_text())
    miou = {k: r["miou"] for k, r in results.items()}
    seconds = results[amp]["timing"]["seconds_per_image"]
    detail = f"{'dry run: bf16 in place of fp16; ' if ctx.dry_run else ''}mIoU {100 * miou[amp]:.2f} with "
    detail += f"eval.amp={amp}, {100 * miou['none']:.2f} in fp32 (2 images, 4 training iterations)"
    passed = math.isfinite(miou[amp]) and abs(miou[amp] - miou["none"]) <= 0.02
    return [Row("eval_fp16", "passed" if passed else "failed", 1 / seconds, detail=detail)]


def check_ddp_two_processes(ctx: Context) -> list[Row]:
    cuda = ctx.device.type == "cuda"
    if cuda and ctx.gpus < 2:
        return [Row("ddp_2_processes", "skipped", detail=f"needs 2 GPUs; this machine has {ctx.gpus}")]
    # SyncBN makes 2 x 2 images the same step as 1 x 4 on GPUs; on the CPU, train.py keeps BatchNorm per
    # process, so the stand-in compares GroupNorm (tests/test_train.py does the same)
    norm = [] if cuda else ["model.norm=gn", "model.norm_groups=4"]
    extra = ["train.deterministic=true", *NO_DROPOUT, *norm]
    env = {"NVIDIA_TF32_OVERRIDE": "0", "OMP_NUM_THREADS": "1"}
    _train(ctx, ctx.work / "ddp2", *extra, env=env, launcher=["--standalone", "--nproc_per_node=2"])
    _train(ctx, ctx.work / "ddp1", *extra, env=env)
    log = (ctx.work / "ddp2" / "train.log").read_text()
    a, b = _load(ctx.work / "ddp2" / "last.pth")["model"], _load(ctx.work / "ddp1" / "last.pth")["model"]
    largest = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    what = "NCCL, SyncBatchNorm" if cuda else "gloo, GroupNorm (CPU stand-in)"
    detail = f"{what}: 2 processes x 2 images against 1 x 4, weights {largest:.1e} apart after 4 iterations"
    passed = "2 process(es)" in log and largest < 1e-3
    return [Row("ddp_2_processes", "passed" if passed else "failed", detail=detail)]


def _official_rows(ctx: Context, name: str, args: list[str]) -> list[Row]:
    """One row per side; an fp32 side fails when its logits are further from the official ones than rounding
    explains (TF32 off; a wrong layer or weight is off by the logits' own scale)."""
    r = _json(_python(ctx, ["scripts/compare_official.py", "--official", ctx.official, *args, *_device_args(ctx),
                            "--json"], env={"NVIDIA_TF32_OVERRIDE": "0"}))  # fmt: skip
    tolerance = 1e-2 * max(1.0, r["max_abs_official_logit"])
    rows = []
    for side, s in r["sides"].items():
        difference = s["max_abs_logit_difference_to_official"]
        detail = f"{s['seconds'] * 1000:.0f} ms, {s['ratio_to_official']:.2f}x the official time; "
        detail += f"logits {difference:.1e} from the official ({s['precision']}"
        detail += f", at most {tolerance:.1e}); " if s["precision"] == "fp32" else ", not compared); "
        detail += f"{r['batch']} x {r['size'][0]}x{r['size'][1]} {r['mode']}"
        passed = s["precision"] != "fp32" or difference <= tolerance
        rows.append(Row(f"{name}/{side}", "passed" if passed else "failed", s["images_per_second"],
                        s["peak_memory_gib"], detail=detail))  # fmt: skip
    return rows


def check_official(ctx: Context, name: str) -> list[Row]:
    if ctx.official is None:
        return [Row(name, "skipped", detail="needs --official /path/to/SPNet (git clone "
                                            "https://github.com/Andrew-Qibin/SPNet)")]  # fmt: skip
    if ctx.dry_run:  # the stand-in (tests/fake_official) has the R50 layout only
        common = ["--config", R50, "--size", "64", "64", "--pairs", "1", "--warmup", "1"]
        if name == "official_train":
            rows = _official_rows(ctx, name, [*common, "--mode", "train", "--batch", "2", "--settings", "exact"])
            return rows + [Row(f"{name}_2", "needs CUDA", detail="fp16 needs CUDA; compiling takes minutes on a CPU")]
        return _official_rows(ctx, name, [*common, "--mode", "inference", "--settings", "bf16"])
    common = ["--config", R101, "--pairs", "3", "--warmup", "2"]
    if name == "official_train":  # two runs: six R101 workers at 2 x 768x768 would not fit in 80 GB together
        train = [*common, "--mode", "train", "--size", "768", "768", "--batch", "2"]
        rows = _official_rows(ctx, name, [*train, "--settings", "plain", "exact", "bf16"])
        return rows + _official_rows(ctx, f"{name}_2", [*train, "--settings", "fp16", "compile"])
    return _official_rows(ctx, name, [*common, "--mode", "inference", "--size", "769", "769", "--settings", "exact",
                                      "bf16", "fp16"])  # fmt: skip


CHECKS: dict[str, Callable[[Context], list[Row]]] = {
    "strip_fast_paths": check_strip_fast_paths,
    "checkpointing_exact": check_checkpointing_exact,
    "ddp_1_process": check_ddp_one_process,
    "resume_exact": check_resume_exact,
    "eval_fp16": check_eval_fp16,
    "ddp_2_processes": check_ddp_two_processes,
    **{name: (lambda ctx, name=name: check_speed(ctx, name)) for name in SPEED},
    "model_info_memory": check_model_info_memory,
    "official_train": lambda ctx: check_official(ctx, "official_train"),
    "official_inference": lambda ctx: check_official(ctx, "official_inference"),
}


def run_checks(names: list[str], ctx: Context, report: Callable[[Row], None] = print) -> list[Row]:
    rows = []
    for name in names:
        start = time.perf_counter()
        if ctx.remaining() <= 0:
            got = [Row(name, "skipped", detail="the time budget (--budget) ran out before it")]
        else:
            try:
                got = CHECKS[name](ctx)
            except CheckFailed as err:
                got = [Row(name, "failed", detail=str(err))]
            except Exception as err:  # a bug or an unexpected failure: this check fails, the others still run
                last = (str(err).strip().splitlines() or [""])[-1]
                got = [Row(name, "failed", detail=f"{type(err).__name__}: {last}")]
        for row in got:
            row.seconds = row.seconds if row.seconds is not None else round(time.perf_counter() - start, 1)
            report(row)
        rows.extend(got)
    return rows


def format_row(row: Row) -> str:
    speed = f"{row.images_per_second:8.2f}" if row.images_per_second is not None else f"{'':8s}"
    memory = f"{row.peak_memory_gib:8.2f}" if row.peak_memory_gib is not None else f"{'':8s}"
    seconds = f"{row.seconds:6.1f}" if row.seconds is not None else f"{'':6s}"
    return f"{row.check:34s} {row.status:10s} {speed} {memory} {seconds}  {row.detail}"


def table(rows: list[Row]) -> str:
    header = f"{'check':34s} {'status':10s} {'img/s':>8s} {'peak GiB':>8s} {'s':>6s}  detail"
    return "\n".join([header, *map(format_row, rows)])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--official", help="a clone of github.com/Andrew-Qibin/SPNet (else its rows are skipped)")
    parser.add_argument("--dry-run", action="store_true", help="CPU stand-ins at tiny sizes, no GPU needed")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), metavar="CHECK", help="run these checks only")
    parser.add_argument("--out", type=Path, default=Path("work_dirs/gpu_check.json"), help="the JSON results")
    parser.add_argument("--budget", type=float, default=570, help="seconds; checks not started by then are skipped")
    add_debug_flag(parser)
    args = parser.parse_intermixed_args(argv)
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        raise ValueError(
            "no CUDA GPU here (torch.cuda.is_available() is False): run it on a machine with one, or add "
            "--dry-run for the CPU stand-ins"
        )
    if args.official is not None and not (Path(args.official) / "models" / "spnet.py").is_file():
        raise FileNotFoundError(f"--official {args.official}: no models/spnet.py there; pass a clone of "
                                "https://github.com/Andrew-Qibin/SPNet")  # fmt: skip
    device = torch.device("cpu" if args.dry_run else "cuda")
    names = args.only or list(CHECKS)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        ctx = Context(args.dry_run, device, Path(work), args.official, start + args.budget,
                      torch.cuda.device_count() if not args.dry_run else 0)  # fmt: skip
        print(f"{len(names)} check(s) on {_device_name(device)}{' (dry run)' if args.dry_run else ''}", flush=True)
        rows = run_checks(names, ctx, lambda row: print(format_row(row), flush=True))
    print("\n" + table(rows))
    result = {
        "device": _device_name(device),
        "dry_run": args.dry_run,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": ctx.gpus,
        "seconds": round(time.monotonic() - start, 1),
        "rows": [dataclasses.asdict(row) for row in rows],
    }
    print(f"wrote {write_json(args.out, result)}")
    return 1 if any(row.status == "failed" for row in rows) else 0


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


if __name__ == "__main__":
    sys.exit(run(main))
