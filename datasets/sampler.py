"""The training data stream: which samples, in which order, with which augmentation seed.

Everything is a function of (seed, position in the stream), so that

- a run resumed at iteration k continues with exactly the batches and augmentations an
  uninterrupted run would have seen (no dependence on worker processes or their RNG state);
- N processes with micro-batch b see, together, the same samples and augmentations per step as
  one process with batch N * b (the union of the ranks' step-s batches is the single process's).

Epoch e is a permutation of the dataset drawn from ``seed + e`` (reshuffled every epoch, as
``DistributedSampler.set_epoch`` does); each epoch is cut into global batches, dropping the last
incomplete one; rank r takes every world_size-th sample of each global batch.

``iterations_per_epoch`` is the official code's epoch length, for converting its schedules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler


def iterations_per_epoch(num_images: int, batch_size: int, num_replicas: int) -> int:
    """Iterations per epoch of the official training (tool/train.py of the official SPNet code).

    Each of its ``num_replicas`` processes draws from a ``DistributedSampler`` (default
    drop_last=False: the dataset is padded by repeating samples up to a multiple of the replicas),
    so a process gets ceil(num_images / num_replicas) samples per epoch; its ``DataLoader`` batches
    them by ``batch_size / num_replicas`` (the config's batch is the global one) with
    drop_last=True. Cityscapes, batch 8 on 4 GPUs: ceil(2975 / 4) = 744 samples per process,
    744 // 2 = 372 iterations, 180 epochs = 66,960 iterations.
    """
    if batch_size % num_replicas:
        raise ValueError(f"batch_size {batch_size} is not a multiple of num_replicas {num_replicas}")
    per_replica = -(-num_images // num_replicas)  # ceil
    return per_replica // (batch_size // num_replicas)


class TrainStream(Sampler[list[tuple[int, int]]]):
    """Infinite batch sampler yielding this rank's micro-batches of ``(index, augmentation seed)``.

    ``micro_batch`` is the per-process batch of one forward pass; ``accumulation`` micro-batches
    make a step, and ``world_size * micro_batch * accumulation`` is the global batch.
    ``start_step`` skips the steps a resumed run has already done (without loading them).
    """

    def __init__(
        self,
        dataset_size: int,
        *,
        micro_batch: int,
        accumulation: int = 1,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_step: int = 0,
    ) -> None:
        self.dataset_size, self.micro_batch, self.accumulation = dataset_size, micro_batch, accumulation
        self.rank, self.world_size, self.seed, self.start_step = rank, world_size, seed, start_step
        self.global_micro = micro_batch * world_size  # samples in one micro-step over all ranks
        self.micro_per_epoch = dataset_size // self.global_micro
        if self.micro_per_epoch < accumulation:
            raise ValueError(
                f"the dataset has {dataset_size} samples, fewer than one global batch "
                f"({self.global_micro * accumulation}); lower train.batch_size"
            )
        # whole steps only: an epoch never ends in the middle of an accumulation
        self.micro_per_epoch -= self.micro_per_epoch % accumulation

    @property
    def steps_per_epoch(self) -> int:
        return self.micro_per_epoch // self.accumulation

    def epoch_order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.dataset_size, generator=torch.Generator().manual_seed(self.seed + epoch))

    def sample_seed(self, epoch: int, position: int) -> int:
        """A distinct seed per (run seed, epoch, position in the epoch); independent of rank and workers."""
        return ((self.seed * 1_000_003 + epoch) * 1_000_000_007 + position) % 2**63

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        micro = self.start_step * self.accumulation
        epoch, offset = divmod(micro, self.micro_per_epoch)
        while True:
            order = self.epoch_order(epoch)
            for m in range(offset, self.micro_per_epoch):
                first = m * self.global_micro
                positions = range(first + self.rank, first + self.global_micro, self.world_size)
                yield [(int(order[p]), self.sample_seed(epoch, p)) for p in positions]
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # pragma: no cover - infinite; DataLoader asks only when told to
        raise TypeError("TrainStream is infinite")


class SeededSamples(Dataset):
    """Wraps a dataset so that ``dataset[(index, seed)]`` augments with RNGs seeded by ``seed``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        # torchvision v2 transforms draw from torch's global CPU RNG; fork it so that loading in the
        # main process (num_workers=0) leaves the training RNG (dropout) untouched. Only the CPU
        # generator is reseeded: torch.manual_seed would also reseed every GPU's, which fork_rng
        # (devices=[]) does not restore, and so override the per-rank dropout seed on the GPU.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]


class ShardSampler(Sampler[int]):
    """Evaluation sharding: rank r gets samples r, r + W, r + 2W, ... Every sample exactly once over
    all ranks, even when the dataset size is not divisible by the world size (no padding)."""

    def __init__(self, dataset_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, dataset_size, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
