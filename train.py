"""Train a segmentation model from a config, on a CPU, one GPU, or many machines.

    python train.py --config configs/demo.yaml
    python train.py --config configs/cityscapes/spnet_r101.yaml model.backbone.pretrained=pretrained/r101.pth
    torchrun --nproc_per_node=4 train.py --config configs/cityscapes/spnet_r101.yaml
    python train.py --config CFG --resume auto          # continue from <work_dir>/last.pth, if any

One iteration is one global batch (``train.batch_size`` over all processes and accumulation
steps); the LR schedule, checkpoints and validation are counted in iterations. Reading order:
``build`` (everything from the config), ``train_step``, ``validate``, ``save_checkpoint``, and
``run_loop``, which calls them.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Subset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from datasets import IGNORE_INDEX, build_dataset
from datasets.sampler import SeededSamples, ShardSampler, TrainStream, iterations_per_epoch
from eval import prepare_for_inference
from models import build_model
from models.weights import load_model_weights, load_state_dict_checked
from utils import cli
from utils.checkpoint import (
    existing_run,
    find_resume_checkpoint,
    remove_stale_temporaries,
    rng_states,
    save_atomic,
    save_training_checkpoint,
    set_rng_states,
)
from utils.config import Config, config_to_dict, load_config, save_config
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
from utils.fast_paths import (
    resolve_channels_last,
    reuse_freed_memory,
    use_strip_conv_fast_path,
    use_strip_pool_fast_path,
)
from utils.inference import AMP_DTYPES, Protocol
from utils.logging import log_to_file, setup_logging
from utils.losses import SegmentationLoss
from utils.metrics import format_table
from utils.optim import build_optimizer, build_scheduler
from utils.preemption import StopRequest, ignore_stop_signals
from utils.results import write_json
from utils.visualize import prediction_panel, save_png


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config")
    parser.add_argument("--resume", help="checkpoint to continue from, or 'auto' for <work_dir>/last.pth")
    parser.add_argument(
        "--stop-file",
        help="stop cleanly (save, then exit) once this file exists, and write the outcome into it; "
        "scripts/slurm_train.sh uses it for SLURM's time-limit warning (docs/training.md, Preemption)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value, e.g. train.max_iters=100")
    cli.add_debug_flag(parser)
    return parser.parse_intermixed_args(argv)


def check_run_length(cfg: Config, overrides: list[str]) -> None:
    """``train.max_iters=N`` typed on the command line would be silently ignored under ``train.epochs``."""
    typed = [o for o in overrides if o.partition("=")[0].strip() == "train.max_iters"]
    if typed and cfg.train.epochs is not None:
        raise ValueError(
            f"{typed[-1]} has no effect: train.epochs = {cfg.train.epochs} sets the run's length; "
            "add train.epochs=null to count in iterations"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    check_run_length(cfg, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        if cfg.train.epochs is not None:
            print(f"# train.epochs = {cfg.train.epochs} sets the run's length at start (from the training set's size)")
            print("# in place of train.max_iters; the train log's first lines give the iterations")
        return 0
    if args.stop_file and Path(args.stop_file).exists():
        raise ValueError(
            f"--stop-file {args.stop_file} already exists (left by an earlier stop, it would stop this run after "
            "its first iteration): delete it, then start again"
        )
    dist_info = init_distributed(cfg.train.device)
    try:
        return train(cfg, args, dist_info)
    finally:
        cleanup()


def work_dir_of(cfg: Config, config_path: str) -> Path:
    """``train.work_dir``, or work_dirs/<path of the config under configs/, without .yaml>."""
    if cfg.train.work_dir:
        return Path(cfg.train.work_dir)
    path = Path(config_path).resolve().with_suffix("")
    parts = path.parts
    return (
        Path("work_dirs", *parts[parts.index("configs") + 1 :]) if "configs" in parts else Path("work_dirs", path.name)
    )


def plan_batches(batch_size: int, world_size: int, per_device: int | None) -> tuple[int, int]:
    """(images per forward pass, accumulation steps) that make the global batch exactly."""
    per_device = per_device or batch_size // world_size
    if per_device < 1 or batch_size % (world_size * per_device):
        raise ValueError(
            f"train.batch_size={batch_size} cannot be split into {world_size} processes x "
            f"train.per_device_batch={per_device} x an integer number of accumulation steps"
        )
    return per_device, batch_size // (world_size * per_device)


def last_validation(work_dir: Path) -> dict | None:
    """The metrics of the newest validation (``val_metrics.json``), or None."""
    path = work_dir / "val_metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def best_saved_miou(work_dir: Path, fallback: float) -> float:
    """The mIoU stored in ``best.pth``: the checkpoint's copy is older when a run died between
    writing ``best.pth`` and its next checkpoint, and would let a worse model replace it."""
    path = work_dir / "best.pth"
    if not path.is_file():
        return fallback
    try:  # mmap: reads the one number, not the weights
        return float(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["miou"])
    except Exception:  # an unreadable best.pth is replaced by the next better model
        return fallback


@dataclasses.dataclass
class Run:
    """Everything ``build`` makes from the config; the loop's state is ``start_iter``, ``best_miou``
    and ``validated_iter`` (the newest iteration whose validation finished)."""

    cfg: Config
    dist: DistInfo
    work_dir: Path
    log: logging.Logger
    model: nn.Module  # what the training step calls (DDP and/or compiled)
    module: nn.Module  # the plain model: checkpoints and validation
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    criterion: SegmentationLoss
    train_loader: DataLoader
    val_loader: DataLoader
    classes: list[str]
    palette: Any
    protocol: Protocol
    writer: SummaryWriter | None
    micro: int
    accum: int
    max_iters: int
    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format
    start_iter: int = 0
    best_miou: float = -1.0
    validated_iter: int = -1

    def is_validation_point(self, iteration: int) -> bool:
        interval = self.cfg.train.eval_interval
        return iteration == self.max_iters or bool(interval and iteration % interval == 0)

    def is_log_point(self, iteration: int) -> bool:
        return iteration % self.cfg.train.log_interval == 0 or iteration == self.max_iters

    def is_checkpoint_point(self, iteration: int) -> bool:
        return iteration == self.max_iters or iteration % self.cfg.train.checkpoint_interval == 0


def without_unused_aux_head(cfg: Config, log: logging.Logger) -> Config:
    """``loss.aux_weight=0`` trains no auxiliary head: an output no loss uses would break DDP
    (parameters without gradients) and cost time. The saved config says so."""
    if cfg.loss.aux_weight > 0 or cfg.model.aux_head is None:
        return cfg
    log.warning("loss.aux_weight=0: the auxiliary head is not built (model.aux_head=null)")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, aux_head=None, aux_head_args={}))


@dataclasses.dataclass
class DataPlan:
    """The datasets and how the global batch splits (processes x micro-batch x accumulation steps)."""

    train_set: Any
    val_set: Any
    stream: TrainStream
    micro: int
    accum: int
    max_iters: int
    iterations_per_epoch: int  # of the official loader, which train.epochs counts


def plan_data(cfg: Config, d: DistInfo) -> DataPlan:
    t = cfg.train
    train_set = build_dataset(cfg, cfg.data.train_split, train=True)
    val_set = build_dataset(cfg, cfg.data.val_split, train=False)
    if t.eval_max_images:
        val_set = Subset(val_set, range(min(t.eval_max_images, len(val_set))))
    micro, accum = plan_batches(t.batch_size, d.world_size, t.per_device_batch)
    stream = TrainStream(
        len(train_set), micro_batch=micro, accumulation=accum, rank=d.rank, world_size=d.world_size, seed=t.seed
    )
    # train.epochs counts epochs of the official loader on the recipe's GPUs, batch / per_device_batch
    # (4 in the paper's configs), whatever this run's processes x accumulation steps are
    epoch = iterations_per_epoch(len(train_set), t.batch_size, num_replicas=t.batch_size // micro)
    max_iters = round(t.epochs * epoch) if t.epochs else t.max_iters
    return DataPlan(train_set, val_set, stream, micro, accum, max_iters, epoch)


def load_scaler_state(scaler: torch.amp.GradScaler, saved: dict) -> bool:
    """Restore the fp16 loss scale; False when the checkpoint was trained without fp16 (nothing to restore)."""
    if not saved and scaler.is_enabled():
        return False
    scaler.load_state_dict(saved)
    return True


def build(
    cfg: Config, args: argparse.Namespace, d: DistInfo, data: DataPlan, resume: Path | None, state: dict | None,
    notes: list[str],
) -> Run:  # fmt: skip
    """Model, optimizer, schedule, loss and loaders from the config; the checkpoint's state restored.

    Writes nothing: a config that fails a check here (a model name, fp16 on the CPU, a checkpoint
    that does not fit) leaves the work dir as it was. ``start_writing`` comes after.
    """
    t, work_dir = cfg.train, work_dir_of(cfg, args.config)
    log = setup_logging(None, d.is_main)  # the console now; train.log gets these lines in start_writing
    for note in notes:  # e.g. a truncated last.pth and the older checkpoint used instead
        log.warning("%s", note)
    cfg = without_unused_aux_head(cfg, log)
    torch.manual_seed(t.seed + d.rank)  # per-rank model-side randomness (dropout); data randomness: TrainStream
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)  # some CUDA backward ops have no such version
    torch.backends.cudnn.benchmark = not t.deterministic  # fixed-size crops; validation turns it off
    micro, accum, max_iters = data.micro, data.accum, data.max_iters
    log.info("work dir %s, %d process(es) on %s, config %s", work_dir, d.world_size, d.device, args.config)
    log.info(
        "%d training images (%d iteration(s) per epoch), %d validation images; batch %d = %d process(es) x %d x %d "
        "accumulation step(s); %d iteration(s)",
        *(len(data.train_set), data.iterations_per_epoch, len(data.val_set), t.batch_size, d.world_size),
        *(micro, accum, max_iters),
    )

    # Model, optimizer, schedule, loss.
    model = build_model(cfg, load_pretrained=state is None and not t.load_from)
    if t.load_from and state is None:
        log.info("%s", load_model_weights(model, t.load_from))
    if accum > 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        log.warning(
            "gradient accumulation keeps the global batch and LR, but BatchNorm statistics come from %d image(s) "
            "per forward pass, not %d: results can differ from the recipe (GroupNorm does not have this issue)",
            micro * (d.world_size if d.device.type == "cuda" and t.sync_bn else 1),
            t.batch_size,
        )
    if d.distributed and d.device.type == "cuda" and t.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # Exact fast paths (utils/fast_paths.py): each is on or off, and none changes the numbers.
    reuse_freed_memory(t.fast.reuse_memory)
    use_strip_conv_fast_path(model, t.fast.strip_conv)
    use_strip_pool_fast_path(model, t.fast.strip_pool)
    channels_last = resolve_channels_last(t.channels_last, t.fast.channels_last, d.device)
    log.info("fast paths: %s, channels_last %s", t.fast, channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(d.device, memory_format=memory_format)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, max_iters)
    if t.amp == "fp16" and d.device.type != "cuda":
        raise ValueError("train.amp=fp16 needs a GPU; use train.amp=bf16 on the CPU")
    scaler = torch.amp.GradScaler(d.device.type, enabled=t.amp == "fp16")
    criterion = SegmentationLoss(
        cfg.loss.type, aux_weight=cfg.loss.aux_weight, ohem_thresh=cfg.loss.ohem_thresh,
        ohem_min_kept=cfg.loss.ohem_min_kept,
    )  # fmt: skip

    start_iter, best_miou = 0, -1.0
    if state is not None:
        load_state_dict_checked(model, state["model"], source=str(resume))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if not load_scaler_state(scaler, state["scaler"]):
            log.info("train.amp=fp16 from iteration %d on: the gradient scaler starts fresh", state["iter"])
        start_iter, best_miou = state["iter"], best_saved_miou(work_dir, state["best_miou"])
        if len(state["rng"]) == d.world_size:
            if set_rng_states(state["rng"][d.rank]):
                log.warning("the checkpoint has no CUDA RNG state for %s: model-side randomness restarts", d.device)
        else:  # the data stream is still exact; only model-side randomness (dropout) restarts
            log.warning(
                "the checkpoint has RNG states of %d processes, not %d: not restored", len(state["rng"]), d.world_size
            )
        log.info("resumed from %s at iteration %d", resume, start_iter)
    module = model
    if d.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[d.local_rank] if d.device.type == "cuda" else None
        )
    if t.compile:
        model = torch.compile(model)

    data.stream.start_step = start_iter
    # The loaders get their own generator: creating worker processes draws a seed from it, and
    # drawing from the global RNG would shift dropout after a resume. (Augmentation is seeded per
    # sample by TrainStream, so worker seeds do not matter.) Workers leave stop signals to us.
    loader_args = dict(
        num_workers=t.num_workers,
        pin_memory=d.device.type == "cuda",
        persistent_workers=t.num_workers > 0,
        generator=torch.Generator().manual_seed(t.seed),
        worker_init_fn=ignore_stop_signals,
    )
    protocol = Protocol.from_config(cfg.eval) if t.eval_protocol == "config" else Protocol.whole_image()
    log.info("validation protocol (train.eval_protocol=%s): %s", t.eval_protocol, protocol)
    return Run(
        cfg=cfg, dist=d, work_dir=work_dir, log=log, model=model, module=module, optimizer=optimizer,
        scheduler=scheduler, scaler=scaler, criterion=criterion,
        train_loader=DataLoader(SeededSamples(data.train_set), batch_sampler=data.stream, **loader_args),
        val_loader=DataLoader(
            data.val_set, batch_size=1, sampler=ShardSampler(len(data.val_set), d.rank, d.world_size),
            **loader_args,
        ),
        classes=data.train_set.classes, palette=data.train_set.palette, protocol=protocol,
        writer=None, micro=micro, accum=accum,
        max_iters=max_iters, amp_dtype=AMP_DTYPES[t.amp], memory_format=memory_format, start_iter=start_iter,
        best_miou=best_miou,
    )  # fmt: skip


def start_writing(run: Run) -> None:
    """The run's first writes, once every check has passed: ``train.log`` (with the lines logged so
    far), the removal of temporary files a kill left, ``config.yaml`` and TensorBoard."""
    if not run.dist.is_main:
        return
    log_to_file(run.log, run.work_dir)
    for path in remove_stale_temporaries(run.work_dir):  # left by writes a kill interrupted
        run.log.info("removed %s (an interrupted write)", path)
    save_config(run.cfg, run.work_dir / "config.yaml")
    run.writer = SummaryWriter(run.work_dir / "tb")


def shut_down_workers(*loaders: DataLoader) -> None:
    """End the loaders' worker processes now, whatever ended the run.

    Left to garbage collection (an exception's traceback keeps the iterator alive), they would meet
    Python's exit, where multiprocessing stops daemon processes with SIGTERM, which the workers
    ignore (``ignore_stop_signals``), and then waits for them forever. Asked here, they exit.
    """
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)  # persistent workers: the loader keeps its iterator
        if hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()


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


def train_step(run: Run, batches: list[dict], stop: StopRequest) -> tuple[torch.Tensor, bool]:
    """Forward/backward over the accumulation steps, then one optimizer step.

    Returns (loss, main, aux) averaged over the global batch, as a device tensor, and whether any
    process was asked to stop (the processes agree on it here, so they all stop after the same
    iteration). Nothing here waits for the GPU: the loss normaliser (labelled pixels of the global
    batch) is counted and summed on the device, OHEM picks its pixels there too, the stop flag is
    agreed on the host, and the loss is read, and checked for NaN, only where the loop synchronises
    anyway (``must_check_loss``). Only fp16's gradient scaler reads the GPU, once per step, to skip
    a step whose gradients overflowed.
    """
    d, model = run.dist, run.model
    stop_now = bool(host_all_reduce_sum(torch.tensor([float(stop.requested)]))[0])
    inputs = [
        (
            b["image"].to(d.device, non_blocking=True).to(memory_format=run.memory_format),
            b["mask"].to(d.device, non_blocking=True),
        )
        for b in batches
    ]
    labelled = all_reduce_sum(sum((target != IGNORE_INDEX).sum(dtype=torch.float64) for _, target in inputs))
    normalizer = (labelled.clamp(min=1) / d.world_size).float()
    step = torch.zeros(3, device=d.device)  # loss, main, aux: this process's share
    for k, (images, target) in enumerate(inputs):
        no_sync = model.no_sync() if d.distributed and k < run.accum - 1 else contextlib.nullcontext()
        with no_sync:
            with torch.autocast(d.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
                outputs = forward(model, images, run.micro)
            loss, parts = run.criterion(outputs, target, normalizer)
            run.scaler.scale(loss).backward()
        step += torch.stack([loss.detach(), parts["main"], parts.get("aux", torch.zeros((), device=d.device))])
    all_reduce_sum(step).div_(d.world_size)  # each process holds world_size x its share of the mean
    run.scaler.step(run.optimizer)  # fp16: skipped when the scaled gradients overflowed (the scaler's own check)
    run.scaler.update()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return step, stop_now


def log_step(run: Run, iteration: int, step: torch.Tensor, lr: float, images_per_second: float, progress: tqdm) -> None:
    """One log line and the TensorBoard scalars; ``lr``: the rate the iteration trained with."""
    loss, main, aux = step.tolist()
    progress.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", img_s=f"{images_per_second:.1f}")
    memory = (
        torch.cuda.max_memory_allocated() / 2**30
        if run.dist.device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    run.log.info(
        "iter %d/%d loss %.4f (main %.4f aux %.4f) lr %.3e %.1f img/s mem %.2f GiB",
        *(iteration, run.max_iters, loss, main, aux, lr, images_per_second, memory),
    )
    if run.writer is not None:
        scalars = dict(loss=loss, loss_main=main, loss_aux=aux, lr=lr, images_per_second=images_per_second)
        for name, value in {**scalars, "memory_gib": memory}.items():
            run.writer.add_scalar(f"train/{name}", value, iteration)


def save_checkpoint(run: Run, iteration: int) -> None:
    """``iter_XXXXXXX.pth`` + ``last.pth`` with everything an exact resume needs (all ranks' RNG states)."""
    rngs = all_gather_object(rng_states())
    if run.dist.is_main:
        state = {
            "model": run.module.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "iter": iteration,
            "best_miou": run.best_miou,
            "rng": rngs,
            "config": config_to_dict(run.cfg),
        }
        path = save_training_checkpoint(state, run.work_dir, iteration, run.cfg.train.keep_checkpoints)
        run.log.info("saved %s", path)
    barrier()


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool):
    """cuDNN re-tunes for every new input shape when benchmarking; whole validation images vary in size."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled and previous
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def inference_model(run: Run) -> tuple[nn.Module, bool]:
    """The model validation runs, and whether in channels_last: with ``train.fast.fold_bn`` a copy
    prepared as eval.py prepares its model (conv+BN folded; the training model keeps its
    BatchNorms), else the training model itself."""
    t = run.cfg.train
    if not t.fast.fold_bn:
        return run.module, run.memory_format == torch.channels_last
    prepared = prepare_for_inference(copy.deepcopy(run.module).eval(), t.fast, t.channels_last, run.dist.device)
    return prepared.model, prepared.channels_last


def validate(run: Run, iteration: int, stop: StopRequest) -> float | None:
    """Validate, log, draw, write ``val_metrics.json`` and (if better) ``best.pth``.

    Returns the mIoU, or None when a stop interrupted it (the validation is then still owed).
    """
    start, t = time.perf_counter(), run.cfg.train
    run.log.info("validating at iteration %d (%d image(s))", iteration, len(run.val_loader.dataset))
    model, channels_last = inference_model(run)
    with cudnn_benchmark(False):
        matrix, pictures = evaluate(
            model, stop.cut(run.val_loader), run.cfg.model.num_classes, run.dist.device,
            protocol=run.protocol, mean=run.cfg.data.mean, std=run.cfg.data.std, amp_dtype=run.amp_dtype,
            channels_last=channels_last, inference_mode=t.fast.inference_mode,
            keep=t.eval_pictures if run.dist.is_main else 0,
        )  # fmt: skip
    del model
    if all_reduce_sum(torch.tensor([float(stop.requested)], device=run.dist.device)).item():
        run.log.warning("validation at iteration %d interrupted by a stop request: owed to the resumed run", iteration)
        return None
    metrics = matrix.compute()
    if run.dist.is_main:
        run.log.info(
            "validation at iteration %d (%.1f s):\n%s",
            *(iteration, time.perf_counter() - start, format_table(metrics, run.classes, run.protocol)),
        )
        run.writer.add_scalar("val/miou", metrics["miou"], iteration)
        run.writer.add_scalar("val/pixel_accuracy", metrics["pixel_accuracy"], iteration)
        for name, iou in zip(run.classes, metrics["iou"]):
            if not math.isnan(iou):
                run.writer.add_scalar(f"val_iou/{name}", iou, iteration)
        if pictures:
            panel = prediction_panel(pictures, run.palette, run.cfg.data.mean, run.cfg.data.std, run.classes)
            run.writer.add_image("val/input_truth_prediction", panel, iteration, dataformats="HWC")
            save_png(panel, run.work_dir / "val_predictions.png")
        if metrics["miou"] > run.best_miou:  # best.pth first: val_metrics.json then marks the validation done
            run.best_miou = metrics["miou"]
            best = {"model": run.module.state_dict(), "iter": iteration, "miou": run.best_miou}
            save_atomic({**best, "config": config_to_dict(run.cfg)}, run.work_dir / "best.pth")
        write_json(run.work_dir / "val_metrics.json", {"iter": iteration, "protocol": str(run.protocol), **metrics})
    run.best_miou = float(broadcast_object(run.best_miou))  # rank 0 decided
    run.validated_iter = iteration
    return metrics["miou"]


def stopped(run: Run, stop: StopRequest, iteration: int) -> int:
    """Report a clean stop; 128 + the signal number when a signal asked (130 for Ctrl-C), else 0."""
    message = f"stop requested ({stop.reason}): stopped at iteration {iteration} of {run.max_iters}, saved"
    run.log.warning("%s", message)
    if run.dist.is_main:
        stop.report(message)
    return 128 + stop.signal if stop.signal else 0


def run_loop(run: Run, stop: StopRequest) -> int:
    """Train from ``run.start_iter`` to the end, checkpointing and validating; a stop saves and returns."""
    start_iter = run.start_iter
    # A validation the previous run did not finish (killed, or stopped in it) comes first.
    if start_iter and run.is_validation_point(start_iter) and run.validated_iter < start_iter:
        if validate(run, start_iter, stop) is None:
            return stopped(run, stop, start_iter)
    # the progress bar: rank 0 only; off when stderr is not a terminal (batch jobs), where the log says the same
    with tqdm(total=run.max_iters, initial=start_iter, disable=None if run.dist.is_main else True, unit="it") as bar:
        return train_iterations(run, stop, bar)


def must_check_loss(run: Run, iteration: int, stop_now: bool) -> bool:
    """Where the loop reads the loss (a GPU synchronisation): log steps, and before anything is saved
    or validated, so a non-finite loss never reaches a checkpoint."""
    checked = run.is_log_point(iteration) or run.is_checkpoint_point(iteration) or run.is_validation_point(iteration)
    return stop_now or checked


def train_iterations(run: Run, stop: StopRequest, progress: tqdm) -> int:
    t, data = run.cfg.train, iter(run.train_loader)
    window_start, window_images = time.perf_counter(), 0
    finite = torch.ones((), dtype=torch.bool, device=run.dist.device)  # every loss since the last check
    checked_iter = run.start_iter
    run.module.train()
    for iteration in range(run.start_iter + 1, run.max_iters + 1):
        lr = run.optimizer.param_groups[0]["lr"]  # this iteration's: train_step steps the schedule
        step, stop_now = train_step(run, [next(data) for _ in range(run.accum)], stop)
        finite &= torch.isfinite(step[0])
        if must_check_loss(run, iteration, stop_now):
            if not finite.item():
                run.log.error(
                    "non-finite loss %s at iteration %d (finite at iteration %d, the last check): stopping "
                    "without saving; the last good checkpoint is %s (lower optim.lr, add optim.warmup_iters, or "
                    "check the data)",
                    *(step[0].item(), iteration, checked_iter, run.work_dir / "last.pth"),
                )
                return 1
            checked_iter = iteration
        progress.update(1)
        window_images += t.batch_size
        if run.is_log_point(iteration):
            log_step(run, iteration, step, lr, window_images / (time.perf_counter() - window_start), progress)
            window_start, window_images = time.perf_counter(), 0
        if stop_now or run.is_checkpoint_point(iteration):
            save_checkpoint(run, iteration)
        if stop_now:
            return stopped(run, stop, iteration)
        if run.is_validation_point(iteration) and validate(run, iteration, stop) is None:
            if not run.is_checkpoint_point(iteration):
                save_checkpoint(run, iteration)
            return stopped(run, stop, iteration)
    if run.dist.is_main:
        final = last_validation(run.work_dir)["miou"] or 0
        run.log.info("final mIoU %.2f%% (best %.2f%%), predictions drawn in %s", 100 * final, 100 * run.best_miou,
                     run.work_dir / "val_predictions.png")  # fmt: skip
    return 0


def train(cfg: Config, args: argparse.Namespace, d: DistInfo) -> int:
    work_dir = work_dir_of(cfg, args.config)
    notes: list[str] = []  # resume warnings, logged once the log exists
    resume, state = find_resume_checkpoint(args.resume, work_dir, warn=notes.append) or (None, None)
    held = existing_run(work_dir) if args.resume is None else None
    if held:
        raise ValueError(
            f"{work_dir} already holds a run ({held}); resume it with --resume auto, or pick another train.work_dir=..."
        )
    data = plan_data(cfg, d)
    # A finished run (trained and validated at its last iteration) is left exactly as it is.
    validated = last_validation(work_dir) if state is not None else None
    if state is not None and state["iter"] >= data.max_iters and validated and validated["iter"] >= data.max_iters:
        if d.is_main:  # last.pth was saved before the final validation: its best mIoU may be older
            best = best_saved_miou(work_dir, state["best_miou"])
            print(
                f"{work_dir}: the run is complete (iteration {state['iter']} of {data.max_iters}; final mIoU "
                f"{100 * (validated['miou'] or 0):.2f}%, best {100 * best:.2f}% in best.pth). Nothing "
                "to do; raise train.max_iters to train longer."
            )
        return 0
    run = build(cfg, args, d, data, resume, state, notes)
    run.validated_iter = validated["iter"] if validated else -1  # a validation still owed runs first
    start_writing(run)
    stop = StopRequest(args.stop_file)
    try:
        return run_loop(run, stop)
    finally:
        shut_down_workers(run.train_loader, run.val_loader)
        stop.close()
        if run.writer is not None:
            run.writer.close()


if __name__ == "__main__":
    sys.exit(cli.run(main))
