"""What a model costs: parameters and FLOPs, counted on the ``meta`` device (shapes, no memory), and
the memory of a training step, measured.

So even R101 at 1024x2048 is counted in about a second. FLOPs are those ``utils.profiling.count_flops``
counts: convolutions and matrix products at 2 per multiply-add; norms, activations, pooling and
interpolation count 0. ``training_memory`` runs two real training steps on random data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from models import build_model
from utils.fast_paths import apply_fast_paths, describe_fast_paths, trim_freed_memory
from utils.inference import AMP_DTYPES
from utils.losses import SegmentationLoss
from utils.profiling import count_flops, current_memory_gib, peak_memory_gib, reset_peak_memory


def count_parameters(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def inference_flops(model: nn.Module, size: tuple[int, int], device: str | torch.device = "meta") -> int:
    """FLOPs of one inference forward pass (eval mode, no grad) on a 1x3xHxW input."""
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, *size, device=device)
        with torch.no_grad():
            return count_flops(lambda: model(x))
    finally:
        model.train(was_training)


def train_flops_per_image(model: nn.Module, size: tuple[int, int], device: str | torch.device = "meta") -> int:
    """FLOPs of one training image: the forward pass in train mode (aux head included) and the backward.

    Counted on a batch of 2 and halved: BatchNorm after image-level pooling (PPM, ASPP) needs 2 values.
    """
    was_training = model.training
    model.train()
    x = torch.zeros(2, 3, *size, device=device)

    def step() -> None:
        sum(out.sum() for out in model(x).values()).backward()

    try:
        return count_flops(step) // 2
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)


def model_info(cfg, size: tuple[int, int], *, train: bool = False) -> dict:
    """Parameters and inference FLOPs of the model ``cfg`` describes at ``size``; with ``train``, also
    the FLOPs per training image."""
    with torch.device("meta"):
        model = build_model(cfg, load_pretrained=False)
    parts = {name: count_parameters(getattr(model, name)) for name in ("backbone", "head", "aux_head")}
    total = count_parameters(model)
    assert total == sum(parts.values()), "the segmentor has parameters outside backbone/head/aux_head"
    info = {
        "parameters": {"total": total, **parts, "inference": total - parts["aux_head"]},
        "flops": inference_flops(model, size),
        "input_size": list(size),
    }
    if train:
        info["train_flops_per_image"] = train_flops_per_image(model, size)
    return info


@dataclasses.dataclass
class TrainingStep:
    """One training step of a config's model on a fixed random batch, as train.py runs it: the config's
    ``train.fast`` paths, ``train.amp`` (fp16 with gradient scaling), ``train.compile``; forward (aux head
    included), cross-entropy on "out" + 0.4 x "aux", backward, an SGD step with momentum."""

    model: nn.Module  # the plain module (``run`` may call a compiled wrapper of it)
    run: Callable[[], torch.Tensor]  # one step; returns the loss, detached, without waiting for it
    description: str


def random_training_step(
    cfg, *, batch: int, size: tuple[int, int], device: str | torch.device, state: dict | None = None
) -> TrainingStep:
    """The step of ``cfg`` (weights seeded, or ``state``) on a seeded random batch of ``batch`` x 3 x ``size``."""
    t, device = cfg.train, torch.device(device)
    if t.amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp=fp16 is for CUDA; use train.amp=bf16 on the CPU")
    torch.backends.cudnn.benchmark = not t.deterministic  # as train.py: kernels timed once for the fixed size
    torch.manual_seed(0)
    model = build_model(cfg, load_pretrained=False).to(device)
    if state is not None:
        model.load_state_dict(state)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *size, generator=generator).to(device)
    target = torch.randint(0, cfg.model.num_classes, (batch, *size), generator=generator).to(device)
    memory_format = apply_fast_paths(model, t.fast, device)
    model.train()
    x = x.contiguous(memory_format=memory_format)
    call = torch.compile(model) if t.compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")
    criterion, dtype = SegmentationLoss("ce", aux_weight=0.4), AMP_DTYPES[t.amp]

    def run() -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss, _ = criterion(call(x), target, float(target.numel()))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    channels_last = memory_format == torch.channels_last
    description = (
        f"train.fast: {describe_fast_paths(t.fast)}; channels_last {channels_last}; amp {t.amp}; compile {t.compile}"
    )
    stages, heads = cfg.model.backbone.checkpoint_stages, cfg.model.checkpoint_heads
    if stages or heads:
        parts = ([f"stages {', '.join(map(str, stages))}"] if stages else []) + (["heads"] if heads else [])
        description += f"; activation checkpointing: {' + '.join(parts)}"
    return TrainingStep(model, run, description)


def training_memory(cfg, *, batch: int, size: tuple[int, int], device: str | torch.device) -> dict:
    """Peak memory of training ``cfg`` at ``batch`` x ``size`` on ``device``, measured over two steps.

    The first step allocates what every later one keeps (momentum buffers, kernel choices, a compile);
    its peak can be the higher one. ``peak_memory_gib`` is the higher peak of the two steps, what to size a
    run for; ``step_memory_gib`` is what the second step adds to the memory held between steps
    (activations, gradients, temporaries: what activation checkpointing lowers). CUDA: the caching
    allocator's tensors (``max_memory_allocated``). CPU: the process's resident set (Linux ``VmHWM``), the
    memory the step takes from the machine, allocator and library buffers included; the memory freed by
    the first step is handed back to the OS first (``malloc_trim``), so that the second step has to take
    its peak from the OS again.
    """
    device = torch.device(device)
    step = random_training_step(cfg, batch=batch, size=size, device=device)
    reset_peak_memory(device)
    step.run()
    _synchronize(device)
    first_peak = peak_memory_gib(device)
    trim_freed_memory()
    before = current_memory_gib(device)
    reset_peak_memory(device)
    loss = step.run().item()  # .item() waits for the device
    second_peak = peak_memory_gib(device)
    measured = [p for p in (first_peak, second_peak) if p is not None]
    cuda = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "batch": batch,
        "input_size": list(size),
        "peak_memory_gib": max(measured) if measured else None,
        "memory_before_step_gib": before,
        "step_memory_gib": None if second_peak is None or before is None else second_peak - before,
        "measured": "CUDA max_memory_allocated" if cuda else "resident set of the process (VmHWM, VmRSS)",
        "loss": loss,
        "settings": step.description,
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
