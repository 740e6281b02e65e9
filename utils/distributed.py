"""Process-group helpers. Single-process runs need none of this; under ``torchrun`` it is one call.

``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; we read them and never
choose ports or rewrite CUDA_VISIBLE_DEVICES. NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (if any) and pick this process's device.

    ``device``: ``auto`` (the local GPU if there is one, else the CPU), ``cpu`` or ``cuda`` (no GPU: a
    ``ValueError``, a user error of utils/cli.py).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError(
            "train.device=cuda, but torch sees no GPU (torch.cuda.is_available() is False); "
            "use train.device=cpu, or train.device=auto for the GPU where there is one"
        )
    if use_cuda:
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(minutes=30),  # validation on rank 0 may keep the others waiting
            device_id=chosen if use_cuda else None,
        )
    global _HOST_GROUP
    if world_size > 1 and use_cuda and _HOST_GROUP is None:  # every rank creates it, in the same order
        _HOST_GROUP = dist.new_group(backend="gloo", timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank, world_size, local_rank, chosen)


_HOST_GROUP = None  # gloo beside NCCL: host-side agreement that never waits for the GPU


def cleanup() -> None:
    global _HOST_GROUP
    if dist.is_initialized():
        dist.destroy_process_group()
    _HOST_GROUP = None


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over processes (a no-op when not distributed)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def host_all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum of a CPU tensor over processes, without a GPU synchronisation: under NCCL it
    goes through a gloo group, so the host never waits for the kernels queued before it."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return tensor
    dist.all_reduce(tensor, group=_HOST_GROUP)  # None: the default group, gloo on CPU runs
    return tensor


def broadcast_object(obj: object, src: int = 0) -> object:
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(obj: object) -> list[object]:
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
