"""Evaluation over a dataset: inference, argmax, confusion matrix; shared by train.py and eval.py."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .metrics import ConfusionMatrix


@torch.no_grad()
def predict_whole(model: nn.Module, images: torch.Tensor, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Whole-image inference: class probabilities (B, C, H, W) at input size."""
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(images)["out"]
    return torch.softmax(logits.float(), dim=1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    num_classes: int,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    keep: int = 0,
) -> tuple[ConfusionMatrix, list[dict[str, torch.Tensor]]]:
    """Confusion matrix of ``model`` over this process's ``loader`` shard, summed over processes.

    ``keep``: also return the first ``keep`` (image, mask, prediction) triples, for pictures.
    """
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes, device)
    kept = []
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True).to(memory_format=memory_format)
        prediction = predict_whole(model, images, amp_dtype).argmax(1)
        matrix.update(prediction, batch["mask"])
        for i in range(images.shape[0]):
            if len(kept) < keep:
                kept.append({"image": batch["image"][i], "mask": batch["mask"][i], "prediction": prediction[i].cpu()})
    model.train(was_training)
    return matrix.all_reduce(), kept
