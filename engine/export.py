"""Exporting a model for deployment (ONNX, TorchScript, torch.export) and checking the file against it.

The exported graph takes a normalised (N, 3, H, W) float image (RGB in [0, 1], minus the config's
``data.mean``, over its ``data.std``) and returns the logits (N, num_classes, H, W) at input size;
with ``preprocessing`` it takes the (N, 3, H, W) uint8 RGB image and normalises inside the graph.
Before export the model is folded (conv+BN, ACNet) and its fast paths set as eval.py sets them,
except two that do not belong in a portable graph: channels_last (the input contract is NCHW) and
the NHWC strip pooling kernels (a CPU layout trick); the square pooling grids of MPM and PPM take
their export form (``models/modules/adaptive_pool.py``). ``docs/deploy.md`` has the usage and the
measured checks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from engine.inference import prepare_for_inference
from models.modules.adaptive_pool import use_exportable_pooling

FORMATS = ("onnx", "torchscript", "exported-program")
MIN_AGREEMENT = 0.9999  # --verify: the share of pixels whose predicted class must match
MAX_LOGIT_DIFF = 1e-3  # --verify: the largest |logit difference| allowed in fp32
# --verify's default sizes (H, W): odd, small, square and the full image; for models that test on
# crops of at least 512 (Cityscapes, ADE20K), and for smaller ones such as the demo
LARGE_VERIFY_SIZES = ((97, 113), (512, 512), (769, 769), (1024, 2048))
SMALL_VERIFY_SIZES = ((97, 113), (256, 256), (256, 512), (321, 479))
# the packages each format needs beyond PyTorch (requirements-export.txt)
NEEDS = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "torchscript": (), "exported-program": ()}


def require(fmt: str) -> None:
    """Raise one readable error if a package that ``fmt`` needs is not installed."""
    missing = []
    for name in NEEDS[fmt]:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ValueError(
            f"--format {fmt} needs {', '.join(missing)}, not installed: pip install -r requirements-export.txt"
        )


def default_verify_sizes(crop_size: Sequence[int]) -> tuple[tuple[int, int], ...]:
    return LARGE_VERIFY_SIZES if max(crop_size) >= 512 else SMALL_VERIFY_SIZES


class ExportedGraph(nn.Module):
    """What is exported: normalised image -> logits at input size (or uint8 image, with ``mean``/``std``)."""

    def __init__(self, model: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.model = model
        self.preprocessing = mean is not None
        if self.preprocessing:
            # uint8 -> [0, 1] -> normalised, as one multiply-add: x * scale + shift
            scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float64))
            shift = -torch.tensor(mean, dtype=torch.float64) / torch.tensor(std, dtype=torch.float64)
            self.register_buffer("scale", scale.float().view(1, 3, 1, 1))
            self.register_buffer("shift", shift.float().view(1, 3, 1, 1))
        self.eval()  # for inference only; the exporters warn about a module in training mode

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.preprocessing:
            dtype = self.scale.dtype
            image = image.to(dtype) * self.scale + self.shift
        return self.model(image)["out"]


def prepare_for_export(model: nn.Module, fast: Any) -> nn.Module:
    """The model as eval.py runs it (folded, exact fast paths), NCHW, with export-form pooling."""
    fast = dataclasses.replace(fast, channels_last=False, strip_pool=False)
    model = prepare_for_inference(model, fast, "cpu").model
    use_exportable_pooling(model, True)
    return model


def example_input(size: Sequence[int], *, batch: int, preprocessing: bool, dtype: torch.dtype, seed: int = 0):
    """A random input of the graph's contract, from a local generator (never the global RNG)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    if preprocessing:
        return torch.randint(0, 256, (batch, 3, h, w), generator=gen, dtype=torch.uint8)
    return torch.randn(batch, 3, h, w, generator=gen).to(dtype)


def export(graph: ExportedGraph, fmt: str, output: str | Path, example: torch.Tensor, *, dynamic: bool) -> Path:
    """Write ``graph`` to ``output`` in ``fmt`` (atomically: a temporary file renamed over it).

    With ``dynamic`` the batch, height and width are symbolic (the example must then have batch >= 2:
    torch.export treats sizes 0 and 1 as constants); otherwise the example's shape is the only one.
    """
    require(fmt)
    output = Path(output)
    if fmt == "exported-program" and output.suffix != ".pt2":
        raise ValueError(f"--output {output}: an exported program is a .pt2 archive, name it e.g. model.pt2")
    output.parent.mkdir(parents=True, exist_ok=True)
    # utils.results.atomic_write's temporary-then-rename, by hand: the ONNX exporter writes to a path
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=f".tmp{output.suffix}", dir=output.parent)
    os.close(fd)
    try:
        with torch.no_grad():
            _EXPORTERS[fmt](graph, example, tmp, _dynamic_shapes() if dynamic else None)
        os.replace(tmp, output)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return output


def _dynamic_shapes() -> dict:
    dim = torch.export.Dim
    return {"image": {0: dim("batch", min=1, max=1024), 2: dim("height", min=32), 3: dim("width", min=32)}}


def _export_onnx(graph: nn.Module, example: torch.Tensor, path: str, dynamic_shapes: dict | None) -> None:
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        torch.onnx.export(
            graph, (example,), path, dynamo=True, dynamic_shapes=dynamic_shapes,
            input_names=["image"], output_names=["logits"], external_data=False,
        )  # fmt: skip


def _export_torchscript(graph: nn.Module, example: torch.Tensor, path: str, dynamic_shapes: dict | None) -> None:
    # tracing records the shape arithmetic as graph operations, so a traced graph runs at any size
    # (tested); its warnings are TorchScript's deprecation and StripConv's test of a strip's width 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.jit.save(torch.jit.trace(graph, example, check_trace=False), path)


def _export_program(graph: nn.Module, example: torch.Tensor, path: str, dynamic_shapes: dict | None) -> None:
    torch.export.save(torch.export.export(graph, (example,), dynamic_shapes=dynamic_shapes), path)


_EXPORTERS: dict[str, Callable[[nn.Module, torch.Tensor, str, dict | None], None]] = {
    "onnx": _export_onnx,
    "torchscript": _export_torchscript,
    "exported-program": _export_program,
}


def load_exported(path: str | Path, fmt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The exported file as a function of the input: onnxruntime for ONNX, torch for the others."""
    require(fmt)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported model at {path}: check --output")
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation
            module = torch.jit.load(str(path))
    else:
        module = torch.export.load(str(path)).module()
    return lambda x: module(x)


@dataclasses.dataclass
class Check:
    """One size of ``verify``: the largest |logit difference| and the share of equal predictions."""

    size: tuple[int, int]
    max_diff: float
    agreement: float


def verify(
    run_exported: Callable[[torch.Tensor], torch.Tensor],
    graph: nn.Module,
    sizes: Sequence[Sequence[int]],
    *,
    preprocessing: bool,
    dtype: torch.dtype = torch.float32,
    seed: int = 1,
) -> list[Check]:
    """The exported graph against ``graph`` (PyTorch) on a random input of each size (batch 1)."""
    checks = []
    for i, size in enumerate(tqdm(sizes, desc="verify", unit="size", disable=None)):
        x = example_input(size, batch=1, preprocessing=preprocessing, dtype=dtype, seed=seed + i)
        with torch.no_grad():
            expected = graph(x).float()
            got = run_exported(x).float()
        if got.shape != expected.shape:
            raise ValueError(f"the exported model returns {tuple(got.shape)} at {size}, not {tuple(expected.shape)}")
        agreement = (got.argmax(1) == expected.argmax(1)).double().mean().item()
        checks.append(Check(tuple(size), (got - expected).abs().max().item(), agreement))
    return checks


def failures(checks: Sequence[Check], *, fp32: bool) -> list[str]:
    """What fails --verify's thresholds, in words (empty: it passes)."""
    bad = []
    for c in checks:
        where = f"{c.size[0]}x{c.size[1]}"
        if c.agreement < MIN_AGREEMENT:
            bad.append(f"{where}: {100 * c.agreement:.4f}% of pixels agree (< {100 * MIN_AGREEMENT:.2f}%)")
        if fp32 and not c.max_diff <= MAX_LOGIT_DIFF:  # `not <=` also catches NaN
            bad.append(f"{where}: max |logit diff| {c.max_diff:.2e} (> {MAX_LOGIT_DIFF:g})")
    return bad


def format_checks(checks: Sequence[Check]) -> str:
    lines = ["| size | max abs logit diff | pixel agreement |", "|---|---|---|"]
    lines += [f"| {c.size[0]}x{c.size[1]} | {c.max_diff:.2e} | {100 * c.agreement:.4f}% |" for c in checks]
    return "\n".join(lines)
