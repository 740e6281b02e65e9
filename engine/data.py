"""Training data: the datasets, how the global batch splits over processes, and the loaders.

One iteration is one global batch (``train.batch_size``): processes x images per forward pass x
accumulation steps. The training stream (``datasets.sampler.TrainStream``) seeds every sample's
augmentation from its position in the run, so a resumed run sees the data an uninterrupted one
would; nothing here draws from the global RNG.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from datasets import build_dataset
from datasets.base import DatasetError
from datasets.sampler import SeededSamples, ShardSampler, TrainStream, iterations_per_epoch
from datasets.statistics import ClassStatistics, count_masks, mask_samples, split_key
from utils.cli import raised_by_every_process
from utils.distributed import DistInfo, all_gather_object, broadcast_object
from utils.preemption import ignore_stop_signals

# The counts of every split whose masks a run read before starting, by split name: a resumed run reads
# them instead of the masks, and ``loss.class_weight: {auto: ...}`` is computed from the training split's.
STATISTICS_FILE = "class_statistics.json"


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


def read_masks(cfg: Any, d: DistInfo, data: DataPlan, cache: Path) -> tuple[dict[str, ClassStatistics], list[str]]:
    """Every mask of the training and validation splits read once, before the run writes anything
    (``data.check_masks``; the training split alone when only ``loss.class_weight: {auto: ...}`` needs it).

    The first mask that cannot be read as configured (a value or colour outside the convention, an
    unreadable file) raises the dataset's one-line error, and ``reduce_zero_label`` on masks without a
    single 0 is refused. The processes share the masks and agree on the first error; a split whose
    counts ``cache`` holds (a resumed run) is not read again. Returns the counts by split name and
    the names of the splits read now (``train`` writes ``cache`` once it writes).
    """
    splits = {}
    if cfg.data.check_masks or isinstance(cfg.loss.class_weight, dict):
        splits[cfg.data.train_split] = data.train_set
    if cfg.data.check_masks:
        splits.setdefault(cfg.data.val_split, data.val_set)
    cached = broadcast_object(_cached_counts(cache) if d.is_main else None)  # every process reads what rank 0 does
    counts, read = {}, []
    for name, dataset in splits.items():
        if name in cached and cached[name].split_key == split_key(dataset):
            counts[name] = cached[name]
            continue
        shard = count_masks(
            dataset, shard=(d.rank, d.world_size), workers=cfg.train.num_workers, progress=d.is_main,
            desc=f"reading the masks of {name}",
        )  # fmt: skip
        gathered = all_gather_object(shard)
        errors = [error for _, error in gathered if error is not None]
        if errors:
            raise raised_by_every_process(DatasetError(min(errors)[1]))
        counts[name] = ClassStatistics.combined([stats for stats, _ in gathered])
        read.append(name)
    if cfg.data.check_masks:
        _refuse_reduce_zero_label_without_zeros(splits, counts)
    return counts, read


def _cached_counts(cache: Path) -> dict[str, ClassStatistics]:
    """The counts ``read_masks`` kept; none when the file is absent or unreadable (then read again and replaced)."""
    try:
        return {name: ClassStatistics.from_dict(entry) for name, entry in json.loads(cache.read_text()).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _refuse_reduce_zero_label_without_zeros(splits: dict[str, Any], counts: dict[str, ClassStatistics]) -> None:
    """0 in no mask of any split read as reduce_zero_label: the masks are most likely 0-based already."""
    names = [
        name for name, dataset in splits.items()
        if all(getattr(part, "convention", None) == "reduce_zero_label" for part, _ in mask_samples(dataset))
    ]  # fmt: skip
    if names and not any(counts[name].zero_masks for name in names):
        masks = sum(counts[name].num_images for name in names)
        message = (
            f"data.dataset_args.reduce_zero_label is true, but none of the {masks} masks of {' and '.join(names)} "
            "holds 0, the value it ignores: the masks look 0-based already, and every class would be read as the "
            "one before it; remove data.dataset_args.reduce_zero_label (or set data.check_masks=false if 0 is truly "
            "absent)"
        )
        raise raised_by_every_process(DatasetError(message))


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
