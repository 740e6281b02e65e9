"""Pictures of predictions: masks coloured with the dataset palette, side by side with the input."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def colorize(mask: torch.Tensor | np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """(H, W) train ids -> (H, W, 3) uint8 colours; ignore (255) and unknown ids are black."""
    table = np.zeros((256, 3), np.uint8)
    table[: len(palette)] = np.asarray(palette, np.uint8)
    return table[np.asarray(mask, dtype=np.uint8)]


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(3, H, W) normalised float -> (H, W, 3) uint8 RGB."""
    rgb = image.float().cpu() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return (rgb.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def prediction_panel(
    samples: Sequence[dict[str, torch.Tensor]],
    palette: Sequence[Sequence[int]],
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    """One row per sample: input | ground truth | prediction."""
    rows = [
        np.concatenate(
            [denormalize(s["image"], mean, std), colorize(s["mask"], palette), colorize(s["prediction"], palette)],
            axis=1,
        )
        for s in samples
    ]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, axis=0)


def save_png(image: np.ndarray, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
