"""Train a segmentation model from a config, on a CPU, one GPU, or many machines.

    python train.py --config configs/demo.yaml
    python train.py --config configs/cityscapes/spnet_r101.yaml model.backbone.pretrained=pretrained/r101.pth
    torchrun --nproc_per_node=4 train.py --config configs/cityscapes/spnet_r101.yaml
    python train.py --config CFG --resume auto          # continue from <work_dir>/last.pth, if any

The recipe, top to bottom: ``train`` checks the run folder and builds the data; ``build_step``
builds the model, SGD with the poly schedule, the loss, and restores a checkpoint when resuming;
the loop runs ``train_step`` (forward/backward over the accumulation steps, one optimizer step),
then logs, saves (``save_checkpoint``) and validates (``validate``) at its milestones. One
iteration is one global batch (``train.batch_size`` over all processes and accumulation steps);
the LR schedule, checkpoints and validation count iterations. What keeps a run safe lives below:
``engine/run_dir.py`` (the folder), ``engine/milestones.py``, ``engine/loss_guard.py``,
``engine/data.py`` (loaders), ``utils/preemption.py`` (stop requests), ``utils/checkpoint.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import logging
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from datasets import IGNORE_INDEX, stored_class_info
from datasets.statistics import ClassStatistics, class_weights, format_weights
from engine.data import STATISTICS_FILE, DataPlan, build_loaders, plan_data, read_masks, shut_down_workers
from engine.inference import prepare_for_inference
from engine.loss_guard import LossGuard
from engine.milestones import Milestones
from engine.run_dir import (
    best_saved_miou,
    check_resume_config,
    finished_message,
    last_validation,
    refuse_existing_run,
    save_best,
    start_writing,
    work_dir_of,
)
from engine.run_lock import check_unlocked, lock_run
from models import build_model
from models.weights import load_model_weights, load_state_dict_checked
from utils import cli
from utils.checkpoint import (
    find_resume_checkpoint,
    load_scaler_state,
    restore_process_rng,
    rng_states,
    rng_untouched,
    save_training_checkpoint,
)
from utils.config import Config, config_to_dict, format_config, load_config
from utils.distributed import (
    DistInfo,
    all_gather_object,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup,
    host_all_reduce_sum,
    init_distributed,
)
from utils.evaluation import evaluate
from utils.fast_paths import apply_fast_paths, describe_fast_paths
from utils.inference import AMP_DTYPES
from utils.logging import setup_logging
from utils.losses import SegmentationLoss, build_criterion
from utils.metrics import ImageCounts, format_table
from utils.optim import build_optimizer, build_scheduler
from utils.preemption import StopRequest, left_by_earlier_stop
from utils.protocol import Protocol
from utils.records import save_records
from utils.results import write_json
from utils.visualize import confusion_picture, prediction_panel, save_png


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config")
    parser.add_argument("--resume", help="checkpoint to continue from, or 'auto' for <work_dir>/last.pth")
    parser.add_argument(
        "--stop-file",
        help="stop cleanly (save, then exit) once this file exists, and write the outcome into it; "
        "scripts/slurm_train.sh uses it for SLURM's time-limit warning (docs/training.md, Preemption)",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the keys the config sets to other values than the "
        "defaults, and exit"
    )  # fmt: skip
    parser.add_argument("--print-full-config", action="store_true", help="print every key of the config, and exit")
    parser.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume although the data, the classes or the schedule (batch, length) differ from the checkpoint's",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value, e.g. train.max_iters=100")
    cli.add_debug_flag(parser)
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.print_config or args.print_full_config:
        print(format_config(cfg, full=args.print_full_config), end="")
        return 0
    if args.stop_file and left_by_earlier_stop(args.stop_file):  # not the job script's request to this run
        raise ValueError(
            f"--stop-file {args.stop_file} already exists (left by an earlier stop, it would stop this run after "
            "its first iteration): delete it, then start again"
        )
    dist_info = init_distributed(cfg.train.device)
    try:
        return train(cfg, args, dist_info)
    finally:
        cleanup()


# --- the run --------------------------------------------------------------------------------------


def train(cfg: Config, args: argparse.Namespace, d: DistInfo) -> int:
    """Check the run folder, build, then loop: step, log, save, validate, until the last iteration or a stop."""
    work_dir = work_dir_of(cfg, args.config)
    check_unlocked(work_dir)  # another run in the folder: refused before anything is read or written
    notes: list[str] = []  # warnings, logged once the log exists
    cfg = without_unused_aux_head(cfg, notes)
    resume, state = find_resume_checkpoint(args.resume, work_dir, warn=notes.append) or (None, None)
    data_changed = False
    if args.resume is None:
        refuse_existing_run(work_dir, cfg)
    elif state is not None:
        changes, data_changed = check_resume_config(state["config"], cfg, args.allow_config_change)
        notes += changes
    data = plan_data(cfg, d)
    finished = finished_message(work_dir, state, data.max_iters)
    if finished:  # a finished run is left exactly as it is
        if d.is_main:
            print(finished)
        return 0

    log = start_log(cfg, d, data, work_dir, args.config, notes)
    step, module, counted = build_step(cfg, d, data, resume, state, log, work_dir)
    start_iter = state["iter"] if state is not None else 0
    train_loader, val_loader = build_loaders(data, cfg.train, d, start_iter)
    protocol = cfg.eval.only() if cfg.train.eval_protocol == "config" else Protocol.whole_image()
    log.info("validation protocol (train.eval_protocol=%s): %s", cfg.train.eval_protocol, protocol)
    run = Run(
        cfg, d, work_dir, log, Milestones.of(cfg.train, data.max_iters), val_loader, protocol, data.train_set.classes,
        data.train_set.palette, data.train_set.miou_over_all_classes,
    )  # fmt: skip
    if state is not None:
        run.best_miou = -1.0 if data_changed else best_saved_miou(work_dir, state["best_miou"])
        log.info("resumed from %s at iteration %d", resume, start_iter)
    validated = last_validation(work_dir)
    run.validated_iter = validated["iter"] if validated else -1  # a validation still owed runs first
    lock = lock_run(work_dir, d.is_main)  # one run per work dir, from its first write to its end
    stop = StopRequest(args.stop_file)
    try:
        if d.is_main:
            if lock.stale:
                log.warning("%s was left locked by a run that ended without releasing it (%s)", work_dir, lock.stale)
            start_writing(work_dir, cfg, log)
            if counted is not None:  # the next start (a resume) reads them instead of the masks
                write_json(work_dir / STATISTICS_FILE, {name: stats.to_dict() for name, stats in counted.items()})
            run.writer = SummaryWriter(work_dir / "tb")
        if run.milestones.owes_validation(start_iter, run.validated_iter):
            if not validate(run, module, step.amp_dtype, start_iter, stop):
                return stopped(run, stop, start_iter)
        # the progress bar: rank 0 only; off when stderr is not a terminal (batch jobs), where the log says the same
        with tqdm(total=data.max_iters, initial=start_iter, disable=None if d.is_main else True, unit="it") as bar:
            return loop(run, step, module, train_loader, start_iter, stop, bar)
    finally:
        shut_down_workers(train_loader, val_loader)
        stop.close()
        if run.writer is not None:
            run.writer.close()
        if lock is not None:
            lock.release()


def start_log(
    cfg: Config, d: DistInfo, data: DataPlan, work_dir: Path, config: str, notes: list[str]
) -> logging.Logger:
    """The log (console now, train.log once writing starts), the seeds, and the run's first lines."""
    t = cfg.train
    log = setup_logging(None, d.is_main)
    for note in notes:  # e.g. a truncated last.pth and the older checkpoint used instead
        log.warning("%s", note)
    torch.manual_seed(t.seed + d.rank)  # per-rank model-side randomness (dropout); data randomness: TrainStream
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)  # some CUDA backward ops have no such version
    torch.backends.cudnn.benchmark = not t.deterministic  # fixed-size crops; validation turns it off
    log.info("work dir %s, %d process(es) on %s, config %s", work_dir, d.world_size, d.device, config)
    log.info(
        "%d training images (%d iteration(s) per epoch), %d validation images; batch %d = %d process(es) x %d x %d "
        "accumulation step(s); %d iteration(s)",
        *(len(data.train_set), data.iterations_per_epoch, len(data.val_set), t.batch_size, d.world_size),
        *(data.micro, data.accum, data.max_iters),
    )
    if cfg.optim.warmup_iters >= data.max_iters:
        log.warning(
            "optim.warmup_iters=%d covers the whole run of %d iteration(s): the LR never reaches optim.lr "
            "(lower optim.warmup_iters, e.g. optim.warmup_iters=0 for a smoke test)",
            cfg.optim.warmup_iters, data.max_iters,
        )  # fmt: skip
    return log


def loop(run: Run, step: Step, module: nn.Module, loader: DataLoader, start_iter: int, stop: StopRequest,
         bar: tqdm) -> int:  # fmt: skip
    """Iterations ``start_iter + 1`` to the last: step, check the loss, log, save, validate."""
    t, milestones, data = run.cfg.train, run.milestones, iter(loader)
    guard = LossGuard(run.dist.device, start_iter)
    window_start, window_images = time.perf_counter(), 0
    module.train()
    for iteration in range(start_iter + 1, milestones.max_iters + 1):
        lr = step.optimizer.param_groups[0]["lr"]  # this iteration's: train_step steps the schedule
        losses, stop_now = train_step(step, [next(data) for _ in range(step.accum)], stop)
        guard.add(losses[0])
        if (stop_now or milestones.reads_loss(iteration)) and not guard.all_finite(iteration):
            run.log.error(
                "non-finite loss %s at iteration %d (finite at iteration %d, the last check): stopping without "
                "saving; the last good checkpoint is %s (lower optim.lr, add optim.warmup_iters, or check the data)",
                *(losses[0].item(), iteration, guard.checked_iter, run.work_dir / "last.pth"),
            )
            return 1
        bar.update(1)
        window_images += t.batch_size
        if milestones.logs(iteration):
            log_step(run, iteration, losses, lr, window_images / (time.perf_counter() - window_start), bar)
            window_start, window_images = time.perf_counter(), 0
        if stop_now or milestones.saves(iteration):
            save_checkpoint(run, step, module, iteration)
        if stop_now:
            return stopped(run, stop, iteration)
        if milestones.validates(iteration) and not validate(run, module, step.amp_dtype, iteration, stop):
            if not milestones.saves(iteration):
                save_checkpoint(run, step, module, iteration)
            return stopped(run, stop, iteration)
    if run.dist.is_main:
        final = last_validation(run.work_dir)["miou"] or 0
        pictures = f", predictions drawn in {run.work_dir / 'val_predictions.png'}" if t.eval_pictures else ""
        run.log.info("final mIoU %.2f%% (best %.2f%%)%s", 100 * final, 100 * run.best_miou, pictures)
    return 0


# --- building -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Step:
    """What one training iteration runs: the model (DDP and/or compiled) and how it learns."""

    model: nn.Module
    criterion: SegmentationLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format
    micro: int  # images per forward pass
    accum: int  # accumulation steps
    dist: DistInfo


def build_step(
    cfg: Config, d: DistInfo, data: DataPlan, resume: Path | None, state: dict | None, log: logging.Logger,
    work_dir: Path,
) -> tuple[Step, nn.Module, dict[str, ClassStatistics] | None]:  # fmt: skip
    """The training step's parts from the config, the plain model (checkpoints, validation), and the class
    counts of the splits whose masks were read now (``engine.data.read_masks``, for ``train`` to write), if any.

    With ``state`` (the training checkpoint ``resume``) the model, optimizer, schedule and loss scale continue
    from it. Writes nothing: a config that fails a check here leaves the work dir as it was.
    """
    t = cfg.train
    model = build_model(cfg, load_pretrained=state is None and not t.load_from)
    if t.load_from and state is None:
        classes = data.train_set.classes
        report = load_model_weights(
            model, t.load_from, fine_tune=True, classes=classes, class_map=t.class_map, stored_classes=stored_classes
        )
        log.info("%s", report)
    elif t.class_map is not None and not t.load_from:
        raise ValueError("train.class_map maps the classes of train.load_from: set train.load_from, or class_map=null")
    if data.accum > 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        log.warning(
            "gradient accumulation keeps the global batch and LR, but BatchNorm statistics come from %d image(s) "
            "per forward pass, not %d: results can differ from the recipe (GroupNorm does not have this issue)",
            data.micro * (d.world_size if d.device.type == "cuda" and t.sync_bn else 1),
            t.batch_size,
        )
    if d.distributed and d.device.type == "cuda" and t.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    memory_format = apply_fast_paths(model, t.fast, d.device)  # exact: none changes the numbers
    log.info("fast paths: %s; channels_last %s", describe_fast_paths(t.fast), memory_format == torch.channels_last)
    model = model.to(d.device)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, data.max_iters)
    if t.amp == "fp16" and d.device.type != "cuda":
        raise ValueError("train.amp=fp16 needs a GPU; use train.amp=bf16 on the CPU")
    scaler = torch.amp.GradScaler(d.device.type, enabled=t.amp == "fp16")
    counts, read = read_masks(cfg, d, data, work_dir / STATISTICS_FILE)  # after the model's checks: a pass over masks
    for name, stats in counts.items():
        source = "read now" if name in read else f"counted before, {STATISTICS_FILE}"
        log.info("the %d masks of %s fit the label convention (%s)", stats.num_images, name, source)
    class_weight = class_weight_of(cfg, counts, read, work_dir, log)
    criterion = build_criterion(cfg.loss, cfg.model.num_classes, class_weight)
    if state is not None:
        load_state_dict_checked(model, state["model"], source=str(resume))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if not load_scaler_state(scaler, state["scaler"]):
            log.info("train.amp=fp16 from iteration %d on: the gradient scaler starts fresh", state["iter"])
        warning = restore_process_rng(state["rng"], d.rank, d.world_size, d.device)
        if warning:
            log.warning("%s", warning)
    module = model
    if d.distributed:
        device_ids = [d.local_rank] if d.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if t.compile:
        model = torch.compile(model)
    step = Step(model, criterion, optimizer, scheduler, scaler, AMP_DTYPES[t.amp], memory_format, data.micro,
                data.accum, d)  # fmt: skip
    return step, module, counts if read else None


def class_weight_of(
    cfg: Config, counts: dict[str, ClassStatistics], read: list[str], work_dir: Path, log: logging.Logger
) -> list[float] | None:
    """``loss.class_weight`` as weights: the list as given, or ``{auto: METHOD}`` from the training split's
    counts (``engine.data.read_masks``), logged."""
    spec = cfg.loss.class_weight
    if not isinstance(spec, dict):
        return None if spec is None else list(spec)
    stats = counts[cfg.data.train_split]
    weights = class_weights(stats, spec["auto"])
    source = "counted" if cfg.data.train_split in read else f"from {work_dir / STATISTICS_FILE}"
    log.info(
        "loss.class_weight %s, from the pixel frequencies of %s (%s): %s",
        spec["auto"], cfg.data.train_split, source, format_weights(stats.classes, weights),
    )  # fmt: skip
    return weights


def stored_classes(checkpoint: dict) -> tuple[str, ...] | None:
    """The class names of a ``train.load_from`` checkpoint, from its config when it predates stored names."""
    info = stored_class_info(checkpoint)
    return info[0] if info else None


def without_unused_aux_head(cfg: Config, notes: list[str]) -> Config:
    """``loss.aux_weight=0`` trains no auxiliary head: an output no loss uses would break DDP
    (parameters without gradients) and cost time. The saved config says so, and the log."""
    if cfg.loss.aux_weight > 0 or cfg.model.aux_head is None:
        return cfg
    notes.append("loss.aux_weight=0: the auxiliary head is not built (model.aux_head=null)")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, aux_head=None, aux_head_args={}))


@dataclasses.dataclass
class Run:
    """The run beside its step: where it writes, what validation needs, and the loop's bookkeeping."""

    cfg: Config
    dist: DistInfo
    work_dir: Path
    log: logging.Logger
    milestones: Milestones
    val_loader: DataLoader
    protocol: Protocol
    classes: tuple[str, ...]
    palette: Any
    over_all_classes: bool  # how the dataset's benchmark averages IoUs (utils/metrics.py)
    writer: SummaryWriter | None = None
    best_miou: float = -1.0
    validated_iter: int = -1  # the newest iteration whose validation finished

    def labels(self) -> dict[str, list]:
        """What every checkpoint stores of the label set: fine-tuning maps classes by name, drawing needs colours."""
        return {"classes": list(self.classes), "palette": [list(c) for c in self.palette]}


# --- the training step ----------------------------------------------------------------------------


def train_step(step: Step, batches: list[dict], stop: StopRequest) -> tuple[torch.Tensor, bool]:
    """Forward/backward over the accumulation steps, then one optimizer step.

    Returns (loss, main, aux) averaged over the global batch, as a device tensor, and whether any
    process was asked to stop (the processes agree on it here, so they all stop after the same
    iteration). Nothing here waits for the GPU: the loss normaliser (labelled pixels of the global
    batch) is counted and summed on the device, OHEM picks its pixels there too, the stop flag is
    agreed on the host, and the loss is read, and checked for NaN, only where the loop synchronises
    anyway (``Milestones.reads_loss``). Only fp16's gradient scaler reads the GPU, once per step, to
    skip a step whose gradients overflowed.
    """
    d, model = step.dist, step.model
    stop_now = bool(host_all_reduce_sum(torch.tensor([float(stop.requested)]))[0])
    inputs = [
        (
            b["image"].to(d.device, non_blocking=True).to(memory_format=step.memory_format),
            b["mask"].to(d.device, non_blocking=True),
        )
        for b in batches
    ]
    labelled = all_reduce_sum(sum((target != IGNORE_INDEX).sum(dtype=torch.float64) for _, target in inputs))
    normalizer = (labelled.clamp(min=1) / d.world_size).float()
    total = torch.zeros(3, device=d.device)  # loss, main, aux: this process's share
    for k, (images, target) in enumerate(inputs):
        no_sync = model.no_sync() if d.distributed and k < step.accum - 1 else contextlib.nullcontext()
        with no_sync:
            with torch.autocast(d.device.type, dtype=step.amp_dtype, enabled=step.amp_dtype is not None):
                outputs = forward(model, images, step.micro)
            loss, parts = step.criterion(outputs, target, normalizer)
            step.scaler.scale(loss).backward()
        total += torch.stack([loss.detach(), parts["main"], parts.get("aux", torch.zeros((), device=d.device))])
    all_reduce_sum(total).div_(d.world_size)  # each process holds world_size x its share of the mean
    step.scaler.step(step.optimizer)  # fp16: skipped when the scaled gradients overflowed (the scaler's own check)
    step.scaler.update()
    step.scheduler.step()
    step.optimizer.zero_grad(set_to_none=True)
    return total, stop_now


def forward(model: nn.Module, images: torch.Tensor, micro: int) -> dict[str, torch.Tensor]:
    """``model(images)``; a BatchNorm that sees one value per channel gets the fix, not PyTorch's message."""
    try:
        return model(images)
    except ValueError as err:
        if "Expected more than 1 value per channel" not in str(err):
            raise
        raise ValueError(
            f"a BatchNorm of the model normalises a 1x1 map (image-level pooling: PPM, ASPP, SK, BAM ...) with "
            f"{micro} image(s) per forward pass, which BatchNorm cannot train on: set train.per_device_batch >= 2, "
            "train on several GPUs with train.sync_bn, or use model.norm=gn"
        ) from err


def log_step(run: Run, iteration: int, losses: torch.Tensor, lr: float, images_per_second: float, bar: tqdm) -> None:
    """One log line and the TensorBoard scalars; ``lr``: the rate the iteration trained with."""
    loss, main, aux = losses.tolist()
    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", img_s=f"{images_per_second:.1f}")
    memory = (
        torch.cuda.max_memory_allocated() / 2**30
        if run.dist.device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    run.log.info(
        "iter %d/%d loss %.4f (main %.4f aux %.4f) lr %.3e %.1f img/s mem %.2f GiB",
        *(iteration, run.milestones.max_iters, loss, main, aux, lr, images_per_second, memory),
    )
    if run.writer is not None:
        scalars = dict(loss=loss, loss_main=main, loss_aux=aux, lr=lr, images_per_second=images_per_second)
        for name, value in {**scalars, "memory_gib": memory}.items():
            run.writer.add_scalar(f"train/{name}", value, iteration)


# --- checkpoints and validation -------------------------------------------------------------------


def save_checkpoint(run: Run, step: Step, module: nn.Module, iteration: int) -> None:
    """``iter_XXXXXXX.pth`` + ``last.pth`` with everything an exact resume needs (all ranks' RNG states)."""
    rngs = all_gather_object(rng_states())
    if run.dist.is_main:
        state = {
            "model": module.state_dict(),
            "optimizer": step.optimizer.state_dict(),
            "scheduler": step.scheduler.state_dict(),
            "scaler": step.scaler.state_dict(),
            "iter": iteration,
            "best_miou": run.best_miou,
            "rng": rngs,
            "config": config_to_dict(run.cfg),
            **run.labels(),
        }
        path = save_training_checkpoint(state, run.work_dir, iteration, run.cfg.train.keep_checkpoints)
        run.log.info("saved %s", path)
    barrier()


@rng_untouched()  # the RNGs as they were: the training after it sees what a run resumed before it sees
def validate(run: Run, module: nn.Module, amp_dtype: torch.dtype | None, iteration: int, stop: StopRequest) -> bool:
    """Validate, log, draw, write ``best.pth`` (if better), ``val_records.npz`` (per-image counts for
    scripts/compare_runs.py) and then ``val_metrics.json``.

    With ``train.fast.fold_bn`` a folded copy runs, prepared as eval.py prepares its model (the
    training model keeps its BatchNorms). Returns False when a stop interrupted it (the validation
    is then owed to the resumed run).
    """
    start, t = time.perf_counter(), run.cfg.train
    run.log.info("validating at iteration %d (%d image(s))", iteration, len(run.val_loader.dataset))
    model = copy.deepcopy(module) if t.fast.fold_bn else module
    prepared = prepare_for_inference(model, t.fast, run.dist.device)
    counts = ImageCounts(run.cfg.model.num_classes, run.val_loader.sampler.indices)
    with cudnn_benchmark(False):
        matrix, pictures = evaluate(
            prepared.model, stop.cut(run.val_loader), run.cfg.model.num_classes, run.dist.device,
            protocol=run.protocol, mean=run.cfg.data.mean, std=run.cfg.data.std, amp_dtype=amp_dtype,
            channels_last=prepared.channels_last, inference_mode=t.fast.inference_mode,
            keep=t.eval_pictures if run.dist.is_main else 0, progress=run.dist.is_main, records=counts,
        )  # fmt: skip
    del model, prepared
    if all_reduce_sum(torch.tensor([float(stop.requested)], device=run.dist.device)).item():
        run.log.warning("validation at iteration %d interrupted by a stop request: owed to the resumed run", iteration)
        return False
    metrics = matrix.compute(run.over_all_classes)
    if run.dist.is_main:
        seconds, table = time.perf_counter() - start, format_table(metrics, run.classes, run.protocol)
        run.log.info("validation at iteration %d (%.1f s):\n%s", iteration, seconds, table)
        run.writer.add_scalar("val/miou", metrics["miou"], iteration)
        run.writer.add_scalar("val/pixel_accuracy", metrics["pixel_accuracy"], iteration)
        for name, iou in zip(run.classes, metrics["iou"]):
            if not math.isnan(iou):
                run.writer.add_scalar(f"val_iou/{name}", iou, iteration)
        if pictures:
            title = f"{run.work_dir}, iteration {iteration} of {run.milestones.max_iters}: mIoU {metrics['miou']:.2%}"
            panel = prediction_panel(pictures, run.palette, run.cfg.data.mean, run.cfg.data.std, run.classes, title)
            run.writer.add_image("val/input_truth_prediction", panel, iteration, dataformats="HWC")
            save_png(panel, run.work_dir / "val_predictions.png")
        confusion = confusion_picture(matrix.matrix.cpu(), run.classes, f"{run.work_dir}, iteration {iteration}")
        run.writer.add_image("val/confusion_matrix", confusion, iteration, dataformats="HWC")
        if metrics["miou"] > run.best_miou:  # best.pth first: val_metrics.json then marks the validation done
            run.best_miou = metrics["miou"]
            save_best(run.work_dir, module.state_dict(), iteration, run.best_miou, run.cfg, run.labels())
        records = counts.records(run.classes, run.over_all_classes, run.protocol.slug())
        save_records(run.work_dir / "val_records.npz", records)
        write_json(run.work_dir / "val_metrics.json", {"iter": iteration, "protocol": str(run.protocol), **metrics})
    module.train()
    run.best_miou = float(broadcast_object(run.best_miou))  # rank 0 decided
    run.validated_iter = iteration
    return True


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool):
    """cuDNN re-tunes for every new input shape when benchmarking; whole validation images vary in size."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled and previous
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def stopped(run: Run, stop: StopRequest, iteration: int) -> int:
    """Report a clean stop; 128 + the signal number when a signal asked (130 for Ctrl-C), else 0."""
    message = f"stop requested ({stop.reason}): stopped at iteration {iteration} of {run.milestones.max_iters}, saved"
    run.log.warning("%s", message)
    if run.dist.is_main:
        stop.report(message)
    return 128 + stop.signal if stop.signal else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
