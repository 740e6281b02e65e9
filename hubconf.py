"""torch.hub entry point: a trained checkpoint as a ``Segmenter`` (``engine/segmenter.py``).

segmenter = torch.hub.load("path/to/spnet", "spnet", source="local", checkpoint="best.pth")
ids = segmenter("photo.jpg")
"""

from __future__ import annotations

from engine.segmenter import Segmenter

dependencies = ["torch", "torchvision", "numpy", "PIL", "yaml", "tqdm"]  # checked by torch.hub before loading


def spnet(checkpoint: str, device: str | None = None, **kwargs) -> Segmenter:
    """The model of ``checkpoint`` with its stored config, classes and test protocol; ``kwargs`` go to
    ``Segmenter.from_checkpoint`` (protocol, config, tile_above, verbose)."""
    return Segmenter.from_checkpoint(checkpoint, device, **kwargs)
