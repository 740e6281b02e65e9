"""Pictures of predictions: masks coloured with the dataset palette, side by side with the input; and
heatmaps (effective receptive fields) side by side under their titles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .results import atomic_write

TITLES = ("image", "ground truth", "prediction")
IGNORE_INDEX = 255


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
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> np.ndarray:
    """A title line (e.g. the run, iteration and mIoU), column titles, then one row per sample
    (input | ground truth | prediction), then a colour legend.

    The legend (only with ``class_names``) lists the classes present in the shown ground truths or
    predictions, and "ignore" if a ground truth has it. The text is drawn into the picture so the PNG
    and TensorBoard show the same thing. Returns (H, W, 3) uint8.
    """
    rows = [
        np.concatenate(
            [denormalize(s["image"], mean, std), colorize(s["mask"], palette), colorize(s["prediction"], palette)],
            axis=1,
        )
        for s in samples
    ]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    size = _font_size(width)
    bands = [_title_band(width, rows[0].shape[1] // 3, size), *rows]
    if title:
        bands.insert(0, _caption_band(title, width, size))
    if class_names is not None:
        ids = legend_classes(samples, len(class_names))
        bands.append(_legend_band(ids, class_names, palette, width, size))
    return np.concatenate(bands, axis=0)


def legend_classes(samples: Sequence[dict[str, torch.Tensor]], num_classes: int) -> list[int]:
    """Train ids present in the ground truths or predictions, in class order, then 255 if a ground truth has it."""
    truth = set().union(*(np.unique(np.asarray(s["mask"])).tolist() for s in samples))
    shown = truth.union(*(np.unique(np.asarray(s["prediction"])).tolist() for s in samples))
    return sorted(k for k in shown if 0 <= k < num_classes) + [IGNORE_INDEX] * (IGNORE_INDEX in truth)


def present_classes(prediction: torch.Tensor | np.ndarray, num_classes: int) -> list[int]:
    """Train ids below ``num_classes`` that occur in ``prediction``, in class order (a count, not a sort:
    fast on a large image)."""
    counts = np.bincount(np.asarray(prediction, dtype=np.uint8).ravel(), minlength=256)
    return [k for k in range(min(num_classes, 256)) if counts[k]]


def overlay_picture(
    image: np.ndarray,
    prediction: torch.Tensor | np.ndarray,
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str],
    alpha: float = 0.5,
) -> np.ndarray:
    """The prediction's colours over the image (``alpha``: their opacity), and beneath it the legend of the
    classes present, as ``prediction_panel`` draws it. (H, W, 3) uint8 in, (H + legend, W, 3) uint8 out.

    Blended 512 rows at a time: a float copy of a whole 8000x8000 image would take 1.5 GB.
    """
    prediction = np.asarray(prediction)
    blended = np.empty_like(image)
    for top in range(0, image.shape[0], 512):
        rows = slice(top, top + 512)
        colours = alpha * colorize(prediction[rows], palette)
        blended[rows] = ((1 - alpha) * image[rows] + colours).round().astype(np.uint8)
    width = image.shape[1]
    legend = _legend_band(present_classes(prediction, len(class_names)), class_names, palette, width, _font_size(width))
    return np.concatenate([blended, legend], axis=0)


def _font_size(width: int) -> int:
    """Font pixels for a picture ``width`` wide: 19 for the demo's 1536-px panel, 10 for thumbnails."""
    return min(20, max(10, width // 80))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font; Pillow < 10.1 has only one fixed-size bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _text_box(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> tuple[int, int]:
    """(offset of the tallest glyph's top below the drawing origin, line height) of ``font``."""
    _, top, _, bottom = font.getbbox("Agy")
    return top, bottom - top


def _title_band(width: int, column: int, size: int) -> np.ndarray:
    """White band with the titles centred over the first row's three columns."""
    for s in range(size, 7, -1):  # shrink until the longest title fits its column
        font = _font(s)
        if max(font.getbbox(t)[2] for t in TITLES) <= column - 4:
            break
    top, line = _text_box(font)
    pad = max(2, size // 3)
    band = Image.new("RGB", (width, line + 2 * pad), "white")
    for i, title in enumerate(TITLES):
        # Drawn on a tile of the column's width so a title wider than a narrow image is clipped to its column.
        tile = Image.new("RGB", (column, band.height), "white")
        left, _, right, _ = font.getbbox(title)
        ImageDraw.Draw(tile).text(((column - right - left) // 2, pad - top), title, fill="black", font=font)
        band.paste(tile, (i * column, 0))
    return np.asarray(band)


def _caption_band(text: str, width: int, size: int) -> np.ndarray:
    """White band with ``text`` on the left, shrunk until it fits the width (cut if it never does)."""
    for s in range(size, 7, -1):
        font = _font(s)
        if font.getbbox(text)[2] <= width - 8:
            break
    top, line = _text_box(font)
    pad = max(2, size // 3)
    band = Image.new("RGB", (width, line + 2 * pad), "white")
    ImageDraw.Draw(band).text((pad, pad - top), text, fill="black", font=font)
    return np.asarray(band)


def _legend_band(
    ids: Sequence[int],
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    width: int,
    size: int,
) -> np.ndarray:
    """White band of colour swatches and class names, wrapped onto as many lines as ``width`` needs."""
    font = _font(size)
    top, line = _text_box(font)
    pad, gap = max(2, size // 3), max(4, size // 2)
    colours = np.zeros((256, 3), np.uint8)  # the same lookup as colorize: ignore and unknown ids are black
    colours[: len(palette)] = np.asarray(palette, np.uint8)
    entries, x, y = [], pad, pad
    for k in ids:
        name = "ignore" if k == IGNORE_INDEX else class_names[k]
        entry_width = line + gap // 2 + font.getbbox(name)[2]
        if x > pad and x + entry_width > width - pad:  # start a new line
            x, y = pad, y + line + gap
        entries.append((x, y, name, tuple(int(c) for c in colours[k])))
        x += entry_width + 2 * gap
    band = Image.new("RGB", (width, y + line + pad), "white")
    draw = ImageDraw.Draw(band)
    for x, y, name, colour in entries:
        # The grey outline keeps white or near-white class colours visible on the white band.
        draw.rectangle((x, y, x + line - 1, y + line - 1), fill=colour, outline=(128, 128, 128))
        draw.text((x + line + gap // 2, y - top), name, fill="black", font=font)
    return np.asarray(band)


def confusion_picture(
    matrix: torch.Tensor | np.ndarray, class_names: Sequence[str], title: str | None = None, cell: int = 0
) -> np.ndarray:
    """The confusion matrix as a heatmap: one row per ground-truth class, normalised so that a row
    sums to 100% (where that class's pixels went), one column per predicted class.

    The diagonal is each class's recall. A class without ground-truth pixels has a grey row. Cells show
    their percentage when they are large enough to read (``cell``: pixels per cell; 0 picks a size for
    the class count). Returns (H, W, 3) uint8, drawn with Pillow so training needs no plotting library.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"a confusion matrix of {n} classes is ({n}, {n}), got {counts.shape}")
    totals = counts.sum(axis=1, keepdims=True)
    rows = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    cell = cell or max(6, min(36, 720 // n))
    size = min(14, max(8, cell // 3))
    font, small = _font(size), _font(max(7, min(size, cell // 3)))
    top, line = _text_box(font)
    label = max(font.getbbox(name)[2] for name in class_names) + 2 * line // 3
    grid = np.empty((n * cell, n * cell, 3), np.uint8)
    low, high = np.array([255.0, 255.0, 255.0]), np.array([8.0, 48.0, 107.0])  # white -> dark blue
    shade = low + rows[..., None] * (high - low)
    shade[totals[:, 0] == 0] = 200.0  # no ground truth: grey
    grid[:] = np.repeat(np.repeat(shade.round().astype(np.uint8), cell, axis=0), cell, axis=1)
    picture = Image.new("RGB", (label + n * cell + 1, label + n * cell + 1), "white")
    picture.paste(Image.fromarray(grid), (label, label))
    draw = ImageDraw.Draw(picture)
    for i, name in enumerate(class_names):  # rows: ground truth, on the left; columns: prediction, on top
        y = label + i * cell + (cell - line) // 2 - top
        draw.text((label - font.getbbox(name)[2] - line // 3, y), name, fill="black", font=font)
        tile = Image.new("RGB", (label, line + 2), "white")
        ImageDraw.Draw(tile).text((label - font.getbbox(name)[2] - line // 3, 1 - top), name, fill="black", font=font)
        picture.paste(tile.rotate(90, expand=True), (label + i * cell + (cell - line - 2) // 2, 0))
    if cell >= 24:
        for (i, j), value in np.ndenumerate(rows):
            if totals[i, 0] == 0 or value < 0.005:
                continue
            text = f"{100 * value:.0f}"
            box = small.getbbox(text)
            x = label + j * cell + (cell - box[2] - box[0]) // 2
            y = label + i * cell + (cell - box[3] - box[1]) // 2
            draw.text((x, y), text, fill="white" if value > 0.5 else "black", font=small)
    draw.rectangle(
        (label - 1, label - 1, label + n * cell, label + n * cell), outline=(128, 128, 128)
    )  # around the cells
    bands = [np.asarray(picture)]
    width = picture.width
    bands.insert(0, _caption_band("rows: ground truth, columns: prediction, % of each row", width, size))
    if title:
        bands.insert(0, _caption_band(title, width, size))
    return np.concatenate(bands, axis=0)


# The "inferno" colour map at five anchors, dark to bright: perceptually ordered, readable in grey.
HEAT_ANCHORS = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], np.float64)


def heatmap(values: torch.Tensor | np.ndarray, log_decades: float | None = None) -> np.ndarray:
    """(H, W) non-negative values -> (H, W, 3) uint8, the maximum brightest.

    Linear by default (0 -> dark); with ``log_decades``, log-scaled over that many decades below the
    maximum (smaller values dark), for peaked maps whose tails a linear scale hides.
    """
    v = np.asarray(values, dtype=np.float64)
    top = v.max()
    if top <= 0:
        t = np.zeros_like(v)
    elif log_decades is None:
        t = v / top
    else:
        floor = top * 10.0**-log_decades
        t = (np.log10(np.maximum(v, floor)) - np.log10(floor)) / log_decades
    position = np.clip(t, 0, 1) * (len(HEAT_ANCHORS) - 1)
    low = np.minimum(position.astype(int), len(HEAT_ANCHORS) - 2)
    frac = (position - low)[..., None]
    rgb = HEAT_ANCHORS[low] * (1 - frac) + HEAT_ANCHORS[low + 1] * frac
    return rgb.round().astype(np.uint8)


def titled_grid(
    tiles: Sequence[np.ndarray], titles: Sequence[str], columns: int = 4, title: str | None = None
) -> np.ndarray:
    """(H, W, 3) uint8 tiles of one size in rows of ``columns``, each under its title, a caption on top."""
    size = min(20, max(10, tiles[0].shape[1] // 16))
    cells = [np.concatenate([_caption_band(t, tile.shape[1], size), tile], axis=0) for tile, t in zip(tiles, titles)]
    gap = np.full((cells[0].shape[0], 4, 3), 255, np.uint8)
    rows = []
    for i in range(0, len(cells), columns):
        row = [c for cell in cells[i : i + columns] for c in (cell, gap)][:-1]
        rows.append(np.concatenate(row, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    if title:
        rows.insert(0, _caption_band(title, width, size))
    return np.concatenate(rows, axis=0)


def save_png(image: np.ndarray, path: str | Path) -> None:
    """``image`` as a PNG at ``path``, written atomically; a symbolic link there is replaced, not followed."""
    with atomic_write(path, "wb") as f:
        Image.fromarray(image).save(f, format="PNG")
