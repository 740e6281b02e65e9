"""Evaluation over a dataset: protocol inference, argmax, confusion matrix; shared by train.py and eval.py."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .fast_paths import inference_context
from .inference import Protocol, infer
from .metrics import ConfusionMatrix, ImageCounts


def evaluate(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    num_classes: int,
    device: torch.device,
    *,
    protocol: Protocol | None = None,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    inference_mode: bool = True,
    keep: int = 0,
    on_prediction: Callable[[dict[str, Any], torch.Tensor], None] | None = None,
    progress: bool = False,
    records: ImageCounts | None = None,
) -> tuple[ConfusionMatrix, list[dict[str, torch.Tensor]]]:
    """Confusion matrix of ``model`` over this process's share of ``loader`` (batches of one image),
    summed over processes. Samples without a mask (test splits) are predicted but not scored.

    ``keep``: also return the first ``keep`` (image, mask, prediction) triples, for pictures.
    ``on_prediction(sample, prediction)`` sees every prediction (H, W), e.g. to save it.
    ``inference_mode``: ``torch.inference_mode`` (the fast path), else ``torch.no_grad``.
    ``progress``: a progress bar with the rate and time left, on a terminal only (quiet in logs).
    ``records``: also count every scored image on its own (utils/records.py), gathered over processes.
    """
    protocol = protocol or Protocol.whole_image()
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes, device)
    kept = []
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    with inference_context(inference_mode):  # the matrix is made outside: it is summed over processes after
        bar = tqdm(loader, desc="evaluating", unit="img", disable=None if progress else True)
        for position, batch in enumerate(bar):
            if batch["image"].shape[0] != 1:
                raise ValueError("evaluation takes batches of one image (images may differ in size)")
            image = batch["image"].to(device, non_blocking=True).to(memory_format=memory_format)
            scores = infer(model, image, protocol, num_classes, mean=mean, std=std, amp_dtype=amp_dtype)
            prediction = scores.argmax(0)
            if "mask" in batch and records is not None:  # the image's matrix, counted once for both
                matrix.matrix += records.update(position, batch["name"][0], prediction, batch["mask"][0])
            elif "mask" in batch:
                matrix.update(prediction, batch["mask"][0])
            if on_prediction is not None:
                on_prediction(batch, prediction)
            if len(kept) < keep and "mask" in batch:
                kept.append({"image": batch["image"][0], "mask": batch["mask"][0], "prediction": prediction.cpu()})
    model.train(was_training)
    if records is not None:
        records.gather()
    return matrix.all_reduce(), kept
