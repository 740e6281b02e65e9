"""Shared fixtures: tiny model configs, official checkpoint layouts, random state dicts."""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(ROOT))  # scripts and tests import the repository packages

from utils.config import BackboneConfig, Config, ModelConfig  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_config(**backbone) -> Config:
    """SPNet at a fraction of the width and depth: same structure, fast on CPU."""
    defaults = dict(depth=50, stage_blocks=(1, 1, 2, 3), base_width=8)
    defaults.update(backbone)
    return Config(model=ModelConfig(num_classes=5, backbone=BackboneConfig(**defaults), head="sp"))


def tiny_checkpoint(folder: Path, num_classes: int = 19, **stored: Any) -> tuple[Path, dict[str, Any]]:
    """``folder/model.pth``: a random tiny SPNet saved as train.py saves one (its config, and ``stored``),
    its test protocol a 32x32 window with flip at the image's own size; and that config as a dict."""
    from models import build_model
    from utils.config import config_from_dict, config_to_dict

    torch.manual_seed(0)
    full = config_to_dict(tiny_config())
    full["model"]["num_classes"] = num_classes
    full["eval"].update(crop_size=[32, 32], base_size=None, flip=True)
    model = build_model(config_from_dict(full), load_pretrained=False)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": full, "iter": 1, **stored}, folder / "model.pth")
    return folder / "model.pth", full


def layout(name: str) -> dict[str, list[int]]:
    """Key -> shape of a published checkpoint (``tests/data/<name>_state_dict.json``)."""
    return json.loads((DATA / f"{name}_state_dict.json").read_text())


def random_state_dict(shapes: dict[str, list[int]], dtype=torch.float64, seed: int = 0) -> dict[str, torch.Tensor]:
    """Distinct random tensors with BN-like statistics, so any misplaced tensor changes the output."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=gen, dtype=dtype) + 0.5
        elif len(shape) == 4:  # conv weight, He-scaled so activations stay O(1) through 100 layers
            fan_in = shape[1] * shape[2] * shape[3]
            sd[key] = torch.randn(shape, generator=gen, dtype=dtype) * (1.0 / fan_in) ** 0.5
        elif key.endswith("weight") and len(shape) == 1:  # norm scale
            sd[key] = torch.rand(shape, generator=gen, dtype=dtype) * 0.5 + 0.5
        else:  # biases, running means, classifier
            sd[key] = torch.randn(shape, generator=gen, dtype=dtype) * 0.1
    return sd


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """utils.results.atomic_write's temporary file (every atomic write's: checkpoints, results): its path is
    created as usual, its writes go to /dev/full (ENOSPC). Returns the temporary files created."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    from utils import results

    temporaries = []

    def mkstemp(prefix="", suffix="", dir=None):
        path = Path(dir) / f"{prefix}fulldisk{suffix}"
        path.write_bytes(b"")
        temporaries.append(path)
        return os.open("/dev/full", os.O_WRONLY), str(path)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(results, "permit_as_open_would", lambda fd: None)  # never chmod /dev/full itself
    return temporaries


def png_header(path: Path, width: int, height: int) -> None:
    """A greyscale PNG that declares ``width`` x ``height`` and holds no pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b""))


@pytest.fixture(scope="session")
def synthetic_cityscapes(tmp_path_factory) -> Path:
    """A small Cityscapes tree written by the generator (read-only: copy it before changing it)."""
    from datasets.synthetic import write_cityscapes

    root = tmp_path_factory.mktemp("cityscapes")
    write_cityscapes(root, {"train": 6, "val": 3, "test": 2}, (64, 128), seed=0)
    return root


@pytest.fixture(scope="session")
def synthetic_ade20k(tmp_path_factory) -> Path:
    from datasets.synthetic import write_ade20k

    root = tmp_path_factory.mktemp("ade")
    write_ade20k(root, {"train": 4, "val": 3}, (64, 96), seed=0)
    return root


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory) -> Path:
    from datasets.synthetic import write_folder

    root = tmp_path_factory.mktemp("folder")
    write_folder(root, {"train": 4, "val": 2}, (48, 64), seed=0)
    return root
