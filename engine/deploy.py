"""CPU deployment side by side: PyTorch as eval.py runs it, onnxruntime in fp32 and in int8.

int8 is onnxruntime's post-training static quantisation (``quantize_static``): QDQ format, weights
int8 per output channel, activations uint8 (the x86 kernels' U8S8 pairing), activation ranges from
min/max over calibration images of the training split. onnxruntime rather than ``torch.ao``: it
quantises the exported graph that is deployed anyway (torch.ao's eager mode needs quant stubs and
fused modules in the model's code, its pt2e flow an x86 backend we would have to tune), and runs
it in the runtime we measure. ``docs/deploy.md`` has the measurements.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from datasets import build_dataset
from engine.export import require
from engine.inference import InferenceModel
from utils.evaluation import evaluate
from utils.fast_paths import inference_context


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session of ``path``, with ``threads`` intra-op threads (default: PyTorch's)."""
    require("onnx")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    # onnxruntime's threads otherwise spin for a while after each run, taking the cores from
    # whatever runs next (PyTorch, in a side-by-side timing: 2-7x slower on 2 cores)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel(nn.Module):
    """An onnxruntime session in the model's interface (image -> ``{"out": logits}``), for ``evaluate``."""

    def __init__(self, session) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        array = image.float().contiguous().cpu().numpy()  # NCHW, whatever layout the caller used
        return {"out": torch.from_numpy(self.session.run(None, {self.input_name: array})[0])}


def quantize_int8(fp32: str | Path, int8: str | Path, images: Iterable[torch.Tensor]) -> Path:
    """Write the int8 (static, QDQ) version of the ONNX model ``fp32`` to ``int8``, calibrated on ``images``
    (normalised (1, 3, H, W) tensors, the graph's input)."""
    require("onnx")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = onnx_session(fp32).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self.batches, None)
            return None if image is None else {name: image.float().contiguous().numpy()}

    quantize_static(
        str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    return Path(int8)


def time_side_by_side(sides: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each call of each side, alternating the sides in every round (A, B, C, A, B, C, ...),
    so that a load on a shared machine falls on all of them alike; ``warmup`` untimed rounds first."""
    for _ in range(warmup):
        for step in sides.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in tqdm(range(rounds), desc="rounds", disable=None):
        for name, step in sides.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return times


def latency_table(results: dict[str, dict[str, list[float]]], reference: str) -> str:
    """Markdown: per size, each side's median seconds and its ratio to ``reference``'s median."""
    lines = ["| size | runtime | median s / image | min - max | vs " + reference + " |", "|---|---|---|---|---|"]
    for size, times in results.items():
        base = statistics.median(times[reference])
        for name, seconds in times.items():
            median = statistics.median(seconds)
            spread = f"{min(seconds):.3f} - {max(seconds):.3f}"
            lines.append(f"| {size} | {name} | {median:.3f} | {spread} | {median / base:.2f}x |")
    return "\n".join(lines)


def calibration_images(dataset: Sequence[dict], count: int) -> list[torch.Tensor]:
    """The first ``count`` images of ``dataset`` (normalised, as its transforms make them), (1, 3, H, W) each."""
    if len(dataset) < count:
        raise ValueError(f"--calibration {count}: the split has only {len(dataset)} images")
    return [dataset[i]["image"].unsqueeze(0) for i in range(count)]


def runtimes(
    prepared: InferenceModel, inference_mode: bool, onnx_models: dict[str, OnnxModel], x: torch.Tensor
) -> dict[str, Callable[[], object]]:
    """One call of each runtime on ``x``: PyTorch as eval.py runs it (memory format, inference mode), then ONNX."""
    x_eager = x.to(memory_format=prepared.memory_format)

    def pytorch() -> None:
        with inference_context(inference_mode):
            prepared.model(x_eager)["out"]

    return {"pytorch": pytorch, **{name: partial(model, x) for name, model in onnx_models.items()}}


def score(cfg: Any, models: dict[str, nn.Module], channels_last: bool, max_images: int | None) -> dict[str, float]:
    """mIoU of each model on the validation split under the config's protocol, as eval.py scores."""
    dataset = build_dataset(cfg, cfg.data.val_split, train=False)
    if max_images:
        dataset = torch.utils.data.Subset(dataset, range(min(max_images, len(dataset))))
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=cfg.train.num_workers)
    protocol, over_all = cfg.eval.only(), getattr(dataset, "miou_over_all_classes", False)
    print(f"protocol: {protocol}; {len(dataset)} {cfg.data.val_split} images")
    mious = {}
    for name, model in models.items():
        eager = not isinstance(model, OnnxModel)
        matrix, _ = evaluate(
            model, loader, cfg.model.num_classes, torch.device("cpu"), protocol=protocol, mean=cfg.data.mean,
            std=cfg.data.std, channels_last=eager and channels_last, progress=True,
            inference_mode=cfg.eval.fast.inference_mode,
        )  # fmt: skip
        metrics = matrix.compute(over_all)
        mious[name] = metrics["miou"]
        print(f"{name}: mIoU {100 * metrics['miou']:.2f}%, pixel accuracy {100 * metrics['pixel_accuracy']:.2f}%")
    return mious
