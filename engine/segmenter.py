"""A trained model as a function of an image: class ids, probabilities, a coloured overlay with a legend.

    segmenter = Segmenter.from_checkpoint("work_dirs/demo/best.pth")
    ids = segmenter("photo.jpg")  # (H, W) class ids at the image's size
    Image.fromarray(segmenter.overlay("photo.jpg")).save("overlay.png")

The checkpoint is the whole story: its stored config gives the model, the normalisation, the class
names and palette (unless the checkpoint stores its own) and the test protocol, which runs through
eval.py's code (``engine/inference.py`` prepares the model, ``utils/inference.py`` runs the protocol).
Images above ``tile_above`` pixels are run in bands (``utils.inference.infer_bands``) when the protocol
allows it: the same predictions in memory bounded by the image's width, not its area.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from datasets import class_info
from datasets.base import read_image
from datasets.transforms import eval_transforms
from engine.inference import load_for_inference
from utils.checkpoint import read_checkpoint
from utils.config import Config, config_from_dict
from utils.fast_paths import inference_context
from utils.inference import AMP_DTYPES, infer, infer_bands, tiling_problem
from utils.protocol import Protocol
from utils.visualize import overlay_picture

TILE_ABOVE = 2048 * 2048  # pixels; above it, scores of every class at full size take >300 MB per 19 classes

ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor


def as_image(image: ImageLike, max_pixels: int | None = None) -> torch.Tensor:
    """(3, H, W) uint8 RGB from a path (read as the datasets read images, refused over ``max_pixels``), a PIL
    image, an (H, W, 3) uint8 array or a (3, H, W) uint8 tensor (torchvision's layout, values 0-255).

    A float array or tensor is refused: whether it is 0-1, 0-255 or already normalised cannot be told.
    """
    if isinstance(image, str | Path):
        return read_image(Path(image), max_pixels, "max_pixels")
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3:
        return image.cpu()
    what = f"{type(image).__name__} {getattr(image, 'dtype', '')} {tuple(getattr(image, 'shape', ()))}"
    raise ValueError(
        f"image: {what} is not an image the segmenter reads; pass a path, a PIL image, an (H, W, 3) uint8 numpy "
        "array or a (3, H, W) uint8 tensor (values 0-255, unnormalised)"
    )


def to_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """Fused scores (C, ...) as probabilities that sum to 1 over the classes: spnet and mmseg scores are
    averaged softmaxes already (up to rounding), PyTorch-Encoding's are sums of exp(logits)."""
    return scores / scores.sum(0, keepdim=True)


class Segmenter:
    """A model prepared for inference with what it needs to read images and show its predictions."""

    def __init__(
        self,
        cfg: Config,
        checkpoint: str | Path,
        *,
        device: torch.device | str | None = None,
        protocol: Protocol | None = None,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        tile_above: int = TILE_ABOVE,
        max_pixels: int | None = None,
    ) -> None:
        """``cfg``'s model with the weights of ``checkpoint``, run under ``protocol`` (default: ``cfg.eval``).
        ``classes`` / ``palette`` default to the configured dataset's; an image file over ``max_pixels``
        (default: Pillow's decompression-bomb limit) is refused before it is decoded."""
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if cfg.eval.amp == "fp16" and device.type != "cuda":
            raise ValueError("eval.amp=fp16 needs a GPU; use eval.amp=bf16 on the CPU")
        self.cfg, self.device, self.tile_above, self.max_pixels = cfg, device, tile_above, max_pixels
        self.protocol = protocol or cfg.eval.only()
        known_classes, known_palette = class_info(cfg)
        self.classes = tuple(classes or known_classes)
        self.palette = tuple(tuple(c) for c in (palette or known_palette))
        self.prepared, self.report = load_for_inference(cfg, checkpoint, device)
        self._normalize = eval_transforms(mean=cfg.data.mean, std=cfg.data.std)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: torch.device | str | None = None,
        protocol: Protocol | None = None,
        *,
        config: Config | None = None,
        tile_above: int = TILE_ABOVE,
        max_pixels: int | None = None,
        verbose: bool = True,
    ) -> Segmenter:
        """From the checkpoint alone (train.py's, best.pth): its stored config, and its ``classes`` /
        ``palette`` when it stores them. ``config`` replaces the stored one (a checkpoint without one, or
        written under an older schema). ``protocol`` defaults to the config's ``eval`` section; ``verbose``
        prints it once (on stderr), so a prediction is never made under an unseen protocol."""
        state = read_checkpoint(path, "model checkpoint")
        state = state if isinstance(state, dict) else {}
        if config is None and not state.get("config"):
            raise ValueError(
                f"{path} stores no config, so the model it holds is unknown; pass the config it was trained "
                "with: Segmenter.from_checkpoint(path, config=load_config(CFG))"
            )
        cfg = config or config_from_dict(state["config"], f"{path} (its stored config)")
        segmenter = cls(
            cfg, path, device=device, protocol=protocol, classes=state.get("classes"), palette=state.get("palette"),
            tile_above=tile_above, max_pixels=max_pixels,
        )  # fmt: skip
        if verbose:
            print(f"{path}: protocol {segmenter.protocol}", file=sys.stderr)
        return segmenter

    @property
    def num_classes(self) -> int:
        return self.cfg.model.num_classes

    def tiled(self, height: int, width: int, tile: bool | None = None) -> bool:
        """Whether an image of (height, width) runs in bands: ``tile`` True (refused with the reason when the
        protocol cannot be streamed), False, or None: above ``tile_above`` pixels when the protocol can be."""
        problem = tiling_problem(self.protocol, height, width)
        if tile and problem:
            raise ValueError(problem)
        return tile if tile is not None else height * width > self.tile_above and problem is None

    def bands(self, image: ImageLike, tile: bool | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """The protocol's fused scores (first row, scores (C, rows, W)) top to bottom: one band of the whole
        image in memory, several when tiled. For images whose class scores do not fit in memory at once."""
        raw = as_image(image, self.max_pixels)
        height, width = raw.shape[-2:]
        memory_format = self.prepared.memory_format

        def rows(top: int, bottom: int) -> torch.Tensor:
            band = self._normalize(tv_tensors.Image(raw[:, top:bottom]))[None]
            return band.to(self.device, memory_format=memory_format)

        e, args = self.cfg.eval, (self.prepared.model,)
        kwargs = dict(mean=self.cfg.data.mean, std=self.cfg.data.std, amp_dtype=AMP_DTYPES[e.amp])
        with inference_context(e.fast.inference_mode):
            if self.tiled(height, width, tile):
                yield from infer_bands(*args, rows, height, width, self.protocol, self.num_classes, **kwargs)
            else:
                yield 0, infer(*args, rows(0, height), self.protocol, self.num_classes, **kwargs)

    def __call__(self, image: ImageLike, tile: bool | None = None) -> torch.Tensor:
        """Class ids (H, W) at the image's size, on the CPU (uint8 for up to 256 classes)."""
        raw = as_image(image, self.max_pixels)
        dtype = torch.uint8 if self.num_classes <= 256 else torch.int64
        ids = torch.empty(raw.shape[-2:], dtype=dtype)
        for top, scores in self.bands(raw, tile):
            ids[top : top + scores.shape[1]] = scores.argmax(0).to(dtype).cpu()
        return ids

    def probabilities(self, image: ImageLike, tile: bool | None = None) -> torch.Tensor:
        """Class probabilities (C, H, W) float32 on the CPU, summing to 1 per pixel; their argmax is
        ``segmenter(image)``. A C x H x W array: for a large image, ``bands`` gives them part by part."""
        raw = as_image(image, self.max_pixels)
        out = torch.empty(self.num_classes, *raw.shape[-2:])
        for top, scores in self.bands(raw, tile):
            out[:, top : top + scores.shape[1]] = to_probabilities(scores).cpu()
        return out

    def overlay(self, image: ImageLike, alpha: float = 0.5, tile: bool | None = None) -> np.ndarray:
        """(H + legend, W, 3) uint8: the predicted colours over the image, the legend of the classes present
        beneath (``utils.visualize.overlay_picture``)."""
        raw = as_image(image, self.max_pixels)
        ids = self(raw, tile)
        return overlay_picture(raw.permute(1, 2, 0).numpy(), ids.numpy(), self.palette, self.classes, alpha)
