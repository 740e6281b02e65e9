"""CPU deployment (engine/deploy.py): the side-by-side timing, the onnxruntime model in the model's
interface, and int8 static quantisation of an exported graph."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.deploy import OnnxModel, latency_table, onnx_session, quantize_int8, time_side_by_side
from engine.export import ExportedGraph, example_input, export
from utils.evaluation import evaluate

onnx = pytest.importorskip("onnx")  # requirements-export.txt
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def test_sides_alternate_in_every_round():
    calls = []
    sides = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = time_side_by_side(sides, rounds=3, warmup=1)
    assert calls == list("abc") * 4  # one warm-up round, then three timed ones
    assert {name: len(t) for name, t in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_latency_table_gives_medians_and_ratios_to_the_reference():
    table = latency_table({"64x64": {"pytorch": [2.0, 9.0, 4.0], "ort": [1.0, 1.0, 3.0]}}, "pytorch")
    assert "| 64x64 | pytorch | 4.000 | 2.000 - 9.000 | 1.00x |" in table
    assert "| 64x64 | ort | 1.000 | 1.000 - 3.000 | 0.25x |" in table


class _TinySegmenter(nn.Module):
    """Two convs with BN and a bilinear upsampling: a segmenter's operations at toy size."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.classifier = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.classifier(self.body(x))
        return {"out": nn.functional.interpolate(out, x.shape[-2:], mode="bilinear", align_corners=True)}


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = _TinySegmenter().eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    example = example_input((37, 41), batch=2, preprocessing=False, dtype=torch.float32)
    export(ExportedGraph(model), "onnx", path, example, dynamic=True)
    return model, path


def test_onnx_model_scores_as_the_pytorch_model(tiny_onnx):
    """evaluate() with the session in the model's place: the same confusion matrix as PyTorch."""
    model, path = tiny_onnx
    gen = torch.Generator().manual_seed(0)
    loader = [
        {"image": torch.randn(1, 3, h, w, generator=gen), "mask": torch.randint(0, 4, (1, h, w), generator=gen)}
        for h, w in [(45, 61), (32, 33)]
    ]
    cpu = torch.device("cpu")
    expected, _ = evaluate(model, loader, 4, cpu)
    got, _ = evaluate(OnnxModel(onnx_session(path)), loader, 4, cpu)
    assert torch.equal(got.matrix, expected.matrix)


def test_int8_is_per_channel_static_quantisation_close_to_fp32(tiny_onnx, tmp_path):
    model, path = tiny_onnx
    gen = torch.Generator().manual_seed(1)
    calibration = [torch.randn(1, 3, 40, 48, generator=gen) for _ in range(4)]
    int8 = quantize_int8(path, tmp_path / "int8.onnx", calibration)
    graph = onnx.load(str(int8)).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("QuantizeLinear") >= 2 and ops.count("DequantizeLinear") >= 4  # activations and weights
    scales = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    weight_scales = [
        scales[node.input[1]] for node in graph.node if node.op_type == "DequantizeLinear" and node.input[1] in scales
    ]
    assert any(s.shape == (8,) for s in weight_scales)  # one scale per output channel of the 8-channel conv
    x = torch.randn(1, 3, 40, 48, generator=gen)
    with torch.no_grad():
        expected = model(x)["out"]
    got = OnnxModel(onnx_session(int8))(x)["out"]
    assert not torch.equal(got, expected)  # it is quantised ...
    error = (got - expected).abs().max() / expected.abs().max()
    assert error < 0.05  # ... to within a few percent of the logits' range (8-bit steps)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--config", "c.yaml"], "nothing to measure: give --sizes H W"),
        (["--config", "c.yaml", "--sizes", "512"], "--sizes takes H W pairs"),
        (["--config", "c.yaml", "--miou", "--rounds", "0"], "--rounds must be at least 1, got 0"),
    ],
)
def test_benchmark_deploy_refuses_what_it_cannot_measure(argv, message, capsys):
    import benchmark_deploy

    with pytest.raises(SystemExit) as exit_:
        benchmark_deploy.parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
