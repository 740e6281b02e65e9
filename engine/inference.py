"""A model ready for inference: weights loaded, exact fast paths applied, conv+BN folded, maybe compiled.

eval.py, scripts/predict.py, the benchmarks and validation during training all prepare their model
here, so "what runs at test time" has one definition.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models import build_model
from models.modules import fold_model
from models.weights import LoadReport, load_model_weights
from utils.fast_paths import apply_fast_paths, describe_fast_paths


@dataclasses.dataclass
class InferenceModel:
    """What ``prepare_for_inference`` made: the module to call, the input memory format, a summary."""

    model: nn.Module
    memory_format: torch.memory_format
    summary: str

    @property
    def channels_last(self) -> bool:
        return self.memory_format == torch.channels_last


def prepare_for_inference(
    model: nn.Module, fast: Any, device: torch.device | str, *, compile: bool = False
) -> InferenceModel:
    """The eval-mode ``model`` on ``device`` with the fast paths of ``fast`` (``eval.fast``, or
    ``train.fast`` for validation; utils/fast_paths.py): conv+BN folded in place, strip convs and
    strip pooling switched, memory kept, channels_last where it is on; then compiled if asked."""
    model = model.to(device).eval()
    if fast.fold_bn:
        # a fixed generator: folding checks itself on a sample, and must not draw from the global RNG
        example = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
        folding = f"folding: {fold_model(model, example)}"
    else:
        folding = "folding: off (eval.fast.fold_bn=false / --no-fuse)"
    memory_format = apply_fast_paths(model, fast, device)
    if compile:  # freezing: weights become constants, so inductor prepacks them for its kernels
        model = torch.compile(model, options={"freezing": True})
    channels_last = memory_format == torch.channels_last
    summary = f"{folding}\nfast paths: {describe_fast_paths(fast)}; channels_last {channels_last}; compile {compile}"
    return InferenceModel(model, memory_format, summary)


def load_for_inference(
    cfg: Any, checkpoint: str | Path, device: torch.device | str
) -> tuple[InferenceModel, LoadReport]:
    """The config's model with the checkpoint's weights (strictly), prepared as ``cfg.eval`` says."""
    model = build_model(cfg, load_pretrained=False)
    report = load_model_weights(model, checkpoint)
    return prepare_for_inference(model, cfg.eval.fast, device, compile=cfg.eval.compile), report
