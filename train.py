"""Train a segmentation model from a config, on a CPU, one GPU, or many machines.

    python train.py --config configs/demo.yaml
    python train.py --config configs/cityscapes/spnet_r101.yaml model.backbone.pretrained=pretrained/r101.pth
    torchrun --nproc_per_node=4 train.py --config configs/cityscapes/spnet_r101.yaml
    python train.py --config CFG --resume auto          # continue from <work_dir>/last.pth, if any

One iteration is one global batch (``train.batch_size`` over all processes and accumulation
steps); the LR schedule, checkpoints and validation are counted in iterations.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import signal
import sys
import time
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Subset
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from datasets import IGNORE_INDEX, build_dataset
from datasets.sampler import SeededSamples, ShardSampler, TrainStream
from models import build_model
from models.weights import load_model_weights, load_state_dict_checked
from utils.checkpoint import (
    read_training_checkpoint,
    resolve_resume,
    rng_states,
    save_atomic,
    save_training_checkpoint,
    set_rng_states,
)
from utils.cli import add_debug_flag, run
from utils.config import Config, config_to_dict, load_config, save_config
from utils.distributed import (
    DistInfo,
    all_gather_object,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
)
from utils.evaluation import evaluate
from utils.inference import AMP_DTYPES, Protocol
from utils.logging import setup_logging
from utils.losses import SegmentationLoss
from utils.metrics import format_table
from utils.optim import build_optimizer, build_scheduler
from utils.results import write_json
from utils.visualize import prediction_panel, save_png


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config")
    parser.add_argument("--resume", help="checkpoint to continue from, or 'auto' for <work_dir>/last.pth")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value, e.g. train.max_iters=100")
    add_debug_flag(parser)
    return parser.parse_intermixed_args(argv)


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


class StopRequest:
    """SIGTERM / SIGINT set a flag; the loop saves a checkpoint at the end of the iteration and exits
    with 128 + the signal number (143 for SIGTERM), so a job script can tell "preempted" from "done"."""

    def __init__(self) -> None:
        self.signal = 0
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    @property
    def requested(self) -> bool:
        return self.signal != 0

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    dist_info = init_distributed(cfg.train.device)
    try:
        return train(cfg, args, dist_info)
    finally:
        cleanup()


def last_validation(work_dir: Path) -> dict | None:
    """The metrics of the newest validation (``val_metrics.json``), or None."""
    path = work_dir / "val_metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def train(cfg: Config, args: argparse.Namespace, d: DistInfo) -> int:
    t = cfg.train
    work_dir = work_dir_of(cfg, args.config)

    # Data: the global batch splits into processes x micro-batch x accumulation steps.
    train_set = build_dataset(cfg, cfg.data.train_split, train=True)
    val_set = build_dataset(cfg, cfg.data.val_split, train=False)
    if t.eval_max_images:
        val_set = Subset(val_set, range(min(t.eval_max_images, len(val_set))))
    micro, accum = plan_batches(t.batch_size, d.world_size, t.per_device_batch)
    stream = TrainStream(
        len(train_set), micro_batch=micro, accumulation=accum, rank=d.rank, world_size=d.world_size, seed=t.seed
    )
    max_iters = round(t.epochs * stream.steps_per_epoch) if t.epochs else t.max_iters

    # A finished run (trained and validated at its last iteration) is left exactly as it is.
    resume = resolve_resume(args.resume, work_dir)
    state = read_training_checkpoint(resume) if resume is not None else None
    validated = last_validation(work_dir) if resume is not None else None
    if state is not None and state["iter"] >= max_iters and validated and validated["iter"] >= max_iters:
        if d.is_main:
            print(
                f"{work_dir}: the run is complete (iteration {state['iter']} of {max_iters}; final mIoU "
                f"{100 * (validated['miou'] or 0):.2f}%, best {100 * state['best_miou']:.2f}% in best.pth). Nothing "
                "to do; raise train.max_iters to train longer."
            )
        return 0

    log = setup_logging(work_dir, d.is_main)
    torch.manual_seed(t.seed + d.rank)  # per-rank model-side randomness (dropout); data randomness: TrainStream
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)  # some CUDA backward ops have no such version
    torch.backends.cudnn.benchmark = not t.deterministic
    if d.is_main:
        save_config(cfg, work_dir / "config.yaml")
    log.info("work dir %s, %d process(es) on %s, config %s", work_dir, d.world_size, d.device, args.config)
    log.info(
        "%d training images (%d iterations per epoch), %d validation images; batch %d = %d process(es) x %d x %d "
        "accumulation step(s); %d iterations",
        len(train_set),
        stream.steps_per_epoch,
        len(val_set),
        t.batch_size,
        d.world_size,
        micro,
        accum,
        max_iters,
    )

    # Model, optimizer, schedule.
    model = build_model(cfg, load_pretrained=resume is None and not t.load_from)
    if t.load_from and resume is None:
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
    memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
    model = model.to(d.device, memory_format=memory_format)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, max_iters)
    amp_dtype = AMP_DTYPES[t.amp]
    if t.amp == "fp16" and d.device.type != "cuda":
        raise ValueError("train.amp=fp16 needs a GPU; use train.amp=bf16 on the CPU")
    scaler = torch.amp.GradScaler(d.device.type, enabled=t.amp == "fp16")
    criterion = SegmentationLoss(
        cfg.loss.type,
        aux_weight=cfg.loss.aux_weight,
        ohem_thresh=cfg.loss.ohem_thresh,
        ohem_min_kept=cfg.loss.ohem_min_kept,
    )

    start_iter, best_miou = 0, -1.0
    if state is not None:
        load_state_dict_checked(model, state["model"], source=str(resume))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_iter, best_miou = state["iter"], state["best_miou"]
        if len(state["rng"]) == d.world_size:
            set_rng_states(state["rng"][d.rank])
        else:  # the data stream is still exact; only model-side randomness (dropout) restarts
            log.warning(
                "the checkpoint has RNG states of %d processes, not %d: not restored", len(state["rng"]), d.world_size
            )
        log.info("resumed from %s at iteration %d", resume, start_iter)
    model_without_ddp = model
    if d.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[d.local_rank] if d.device.type == "cuda" else None
        )
    if t.compile:
        model = torch.compile(model)

    stream.start_step = start_iter
    # The loaders get their own generator: creating worker processes draws a seed from it, and
    # drawing from the global RNG would shift dropout after a resume. (Augmentation is seeded per
    # sample by TrainStream, so worker seeds do not matter.)
    loader_args = dict(
        num_workers=t.num_workers,
        pin_memory=d.device.type == "cuda",
        persistent_workers=t.num_workers > 0,
        generator=torch.Generator().manual_seed(t.seed),
    )
    train_loader = DataLoader(SeededSamples(train_set), batch_sampler=stream, **loader_args)
    val_loader = DataLoader(
        val_set, batch_size=1, sampler=ShardSampler(len(val_set), d.rank, d.world_size), **loader_args
    )
    writer = SummaryWriter(work_dir / "tb") if d.is_main else None

    def checkpoint(iteration: int) -> None:
        rngs = all_gather_object(rng_states())
        if d.is_main:
            state = {
                "model": model_without_ddp.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "iter": iteration,
                "best_miou": best_miou,
                "rng": rngs,
                "config": config_to_dict(cfg),
            }
            path = save_training_checkpoint(state, work_dir, iteration, t.keep_checkpoints)
            log.info("saved %s", path)
        barrier()

    protocol = Protocol.from_config(cfg.eval) if t.eval_protocol == "config" else Protocol.whole_image()
    log.info("validation protocol (train.eval_protocol=%s): %s", t.eval_protocol, protocol)

    def validate(iteration: int) -> float:
        nonlocal best_miou
        start = time.perf_counter()
        matrix, pictures = evaluate(
            model_without_ddp,
            val_loader,
            cfg.model.num_classes,
            d.device,
            protocol=protocol,
            mean=cfg.data.mean,
            std=cfg.data.std,
            amp_dtype=amp_dtype,
            channels_last=t.channels_last,
            keep=t.eval_pictures if d.is_main else 0,
        )
        metrics = matrix.compute()
        if d.is_main:
            classes = train_set.classes
            log.info(
                "validation at iteration %d (%.1f s):\n%s",
                iteration,
                time.perf_counter() - start,
                format_table(metrics, classes, protocol),
            )
            writer.add_scalar("val/miou", metrics["miou"], iteration)
            writer.add_scalar("val/pixel_accuracy", metrics["pixel_accuracy"], iteration)
            for name, iou in zip(classes, metrics["iou"]):
                if not math.isnan(iou):
                    writer.add_scalar(f"val_iou/{name}", iou, iteration)
            if pictures:
                panel = prediction_panel(pictures, train_set.palette, cfg.data.mean, cfg.data.std, train_set.classes)
                writer.add_image("val/input_truth_prediction", panel, iteration, dataformats="HWC")
                save_png(panel, work_dir / "val_predictions.png")
            write_json(work_dir / "val_metrics.json", {"iter": iteration, "protocol": str(protocol), **metrics})
            if metrics["miou"] > best_miou:
                best_miou = metrics["miou"]
                save_atomic(
                    {
                        "model": model_without_ddp.state_dict(),
                        "iter": iteration,
                        "miou": best_miou,
                        "config": config_to_dict(cfg),
                    },
                    work_dir / "best.pth",
                )
        best_miou = float(broadcast_object(best_miou))  # rank 0 decided
        return metrics["miou"]

    stop = StopRequest()
    data = iter(train_loader)
    # rank 0 only; off when stderr is not a terminal (batch jobs), where the log lines say the same
    progress = tqdm(
        total=max_iters, initial=start_iter, disable=None if d.is_main else True, dynamic_ncols=True, unit="it"
    )
    window_start, window_images = time.perf_counter(), 0
    # The final validation is owed until val_metrics.json says it ran (a kill during it, or a stop in the
    # last iteration, leaves it to the resumed run).
    last_saved, last_validated = start_iter, (validated or {}).get("iter", -1)
    model.train()
    for it in range(start_iter, max_iters):
        batches = [next(data) for _ in range(accum)]
        # One small all-reduce per step: labelled pixels of the global batch (the loss normaliser)
        # and whether any process was asked to stop. It is also the step's one host sync.
        shared = torch.tensor(
            [sum(int((b["mask"] != IGNORE_INDEX).sum()) for b in batches), float(stop.requested)],
            dtype=torch.float64,
            device=d.device,
        )
        labelled, stop_now = all_reduce_sum(shared).tolist()
        normalizer = max(labelled, 1.0) / d.world_size
        step = torch.zeros(3, device=d.device)  # loss, main, aux: this process's share of the step
        for k, batch in enumerate(batches):
            images = batch["image"].to(d.device, non_blocking=True).to(memory_format=memory_format)
            target = batch["mask"].to(d.device, non_blocking=True)
            no_sync = model.no_sync() if d.distributed and k < accum - 1 else contextlib.nullcontext()
            with no_sync:
                with torch.autocast(d.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    outputs = forward(model, images, micro)
                loss, parts = criterion(outputs, target, normalizer)
                scaler.scale(loss).backward()
            step += torch.stack([loss.detach(), parts["main"], parts.get("aux", torch.zeros((), device=d.device))])
        all_reduce_sum(step).div_(d.world_size)  # each process holds world_size x its share of the mean
        if not torch.isfinite(step[0]):
            log.error(
                "non-finite loss %s at iteration %d: stopping without saving; the last good checkpoint is %s "
                "(lower optim.lr, add optim.warmup_iters, or check the data)",
                step[0].item(),
                it + 1,
                work_dir / "last.pth",
            )
            return 1
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        iteration = it + 1
        window_images += t.batch_size
        progress.update(1)

        if iteration % t.log_interval == 0 or iteration == max_iters:
            elapsed = time.perf_counter() - window_start
            throughput = window_images / elapsed
            lr = optimizer.param_groups[0]["lr"]
            loss_value, main_value, aux_value = step.tolist()
            progress.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", img_s=f"{throughput:.1f}")
            memory = (
                torch.cuda.max_memory_allocated() / 2**30
                if d.device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            )
            log.info(
                "iter %d/%d loss %.4f (main %.4f aux %.4f) lr %.3e %.1f img/s mem %.2f GiB",
                iteration,
                max_iters,
                loss_value,
                main_value,
                aux_value,
                lr,
                throughput,
                memory,
            )
            if writer is not None:
                for name, value in (
                    ("loss", loss_value),
                    ("loss_main", main_value),
                    ("loss_aux", aux_value),
                    ("lr", lr),
                    ("images_per_second", throughput),
                    ("memory_gib", memory),
                ):
                    writer.add_scalar(f"train/{name}", value, iteration)
            window_start, window_images = time.perf_counter(), 0
        if stop_now:
            log.warning("stop requested (SIGTERM/SIGINT): saving iteration %d and exiting", iteration)
            checkpoint(iteration)
            progress.close()
            return 128 + (stop.signal or signal.SIGTERM)  # a signal may have reached another process only
        if iteration % t.checkpoint_interval == 0 and iteration < max_iters:
            checkpoint(iteration)
            last_saved = iteration
        if t.eval_interval and iteration % t.eval_interval == 0 and iteration < max_iters:
            validate(iteration)
            last_validated = iteration
    progress.close()
    if last_saved != max_iters:
        checkpoint(max_iters)
    if last_validated != max_iters:
        miou = validate(max_iters)
        log.info(
            "final mIoU %.2f%% (best %.2f%%), predictions drawn in %s",
            100 * miou,
            100 * best_miou,
            work_dir / "val_predictions.png",
        )
    if writer is not None:
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
