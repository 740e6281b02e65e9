"""Training data: the datasets, how the global batch splits over processes, and the loaders.

One iteration is one global batch (``train.batch_size``): processes x images per forward pass x
accumulation steps. The training stream (``datasets.sampler.TrainStream``) seeds every sample's
augmentation from its position in the run, so a resumed run sees the data an uninterrupted one
would; nothing here draws from the global RNG.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from datasets import build_dataset
from datasets.sampler import SeededSamples, ShardSampler, TrainStream, iterations_per_epoch
from utils.distributed import DistInfo
from utils.preemption import ignore_stop_signals


def plan_batches(batch_size: int, world_size: int, per_device: int | None) -> tuple[int, int]:
    """(images per forward pass, accumulation steps) that make the global batch exactly."""
    per_device = per_device or batch_size // world_size
    if per_device < 1 or batch_size % (world_size * per_device):
        raise ValueError(
            f"train.batch_size={batch_size} cannot be split into {world_size} processes x "
            f"train.per_device_batch={per_device} x an integer number of accumulation steps"
        )
    return per_device, batch_size // (world_size * per_device)


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


def plan_data(cfg: Any, d: DistInfo) -> DataPlan:
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


def build_loaders(data: DataPlan, t: Any, d: DistInfo, start_iter: int) -> tuple[DataLoader, DataLoader]:
    """The training loader (from iteration ``start_iter`` on) and the validation loader (this process's share).

    The loaders get their own generator: creating worker processes draws a seed from it, and drawing
    from the global RNG would shift dropout after a resume (augmentation is seeded per sample by the
    stream, so worker seeds do not matter). Workers leave stop signals to the main process.
    """
    data.stream.start_step = start_iter
    options = dict(
        num_workers=t.num_workers,
        pin_memory=d.device.type == "cuda",
        persistent_workers=t.num_workers > 0,
        generator=torch.Generator().manual_seed(t.seed),
        worker_init_fn=ignore_stop_signals,
    )
    train_loader = DataLoader(SeededSamples(data.train_set), batch_sampler=data.stream, **options)
    val_sampler = ShardSampler(len(data.val_set), d.rank, d.world_size)
    return train_loader, DataLoader(data.val_set, batch_size=1, sampler=val_sampler, **options)


def shut_down_workers(*loaders: DataLoader) -> None:
    """End the loaders' worker processes now, whatever ended the run.

    Left to garbage collection (an exception's traceback keeps the iterator alive), they would meet
    Python's exit, where multiprocessing stops daemon processes with SIGTERM, which the workers
    ignore (``ignore_stop_signals``), and then waits for them forever. Asked here, they exit.
    PyTorch has no public call for it: persistent workers live in the loader's private iterator.
    """
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)
        if hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
