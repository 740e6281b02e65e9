"""Export (engine/export.py, scripts/export.py): the exported files compute what the PyTorch model
computes, at sizes the export never saw, and the export form of adaptive pooling equals PyTorch's."""

from __future__ import annotations

import copy
import sys

import export as export_script
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, tiny_config
from engine.export import ExportedGraph, example_input, export, load_exported, prepare_for_export
from models import build_model
from models.modules import ASPP, MixedPooling, PyramidPooling
from models.modules.adaptive_pool import adaptive_avg_pool2d, pooling_matrix, use_exportable_pooling
from utils.cli import run

onnx = pytest.importorskip("onnx")  # requirements-export.txt (in requirements-dev.txt: CI runs these)
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

DEMO = str(ROOT / "configs/demo.yaml")
TINY = ["model.backbone.stage_blocks=[1,1,1,2]", "model.backbone.base_width=8"]  # the demo (R18), narrower
UNSEEN = [(1, 65, 97), (1, 33, 47), (3, 161, 129)]  # (batch, H, W): the export saw (2, 97, 113)


def _naive_adaptive_pool(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Adaptive average pooling by its definition, one output cell at a time."""
    h, w = x.shape[-2:]
    out = torch.empty(*x.shape[:-2], out_h, out_w, dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            r0, r1 = (i * h) // out_h, -((-(i + 1) * h) // out_h)  # floor, ceil
            c0, c1 = (j * w) // out_w, -((-(j + 1) * w) // out_w)
            out[..., i, j] = x[..., r0:r1, c0:c1].mean(dim=(-2, -1))
    return out


@pytest.mark.parametrize("size", [20, 12, 6, 3, 1, (2, 7)])
@pytest.mark.parametrize("hw", [(20, 20), (40, 60), (37, 41), (13, 9), (5, 3), (1, 1), (97, 23)])
def test_exportable_pool_equals_adaptive_avg_pool(size, hw):
    """Divisible, not divisible and smaller than the grid: the matrix form equals PyTorch's kernel in float64."""
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    out_h, out_w = (size, size) if isinstance(size, int) else size
    expected = F.adaptive_avg_pool2d(x, size)
    torch.testing.assert_close(adaptive_avg_pool2d(x, size, exportable=True), expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(expected, _naive_adaptive_pool(x, out_h, out_w), rtol=0, atol=1e-14)


def test_pooling_matrix_rows_average_the_bins():
    """L = 5 into 3 bins: [0, 2), [1, 4), [3, 5), PyTorch's overlapping bins."""
    expected = torch.tensor([[1 / 2, 1 / 2, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, 1 / 2, 1 / 2]])
    torch.testing.assert_close(pooling_matrix(5, 3, torch.zeros((), dtype=torch.float64)), expected.double())


@pytest.mark.parametrize("module", [MixedPooling(16), PyramidPooling(16)], ids=["mpm", "ppm"])
@pytest.mark.parametrize("hw", [(33, 47), (20, 20), (13, 9), (4, 5), (64, 31)])
def test_modules_with_exportable_pool_equal_the_plain_ones(module, hw):
    module = module.double().eval()
    x = torch.randn(2, 16, *hw, dtype=torch.float64)
    with torch.no_grad():
        expected = module(x)
        assert use_exportable_pooling(module, True) == 1
        got = module(x)
        use_exportable_pooling(module, False)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_the_whole_model_with_exportable_pool_equals_the_plain_one():
    model = build_model(tiny_config(), load_pretrained=False).double().eval()
    x = torch.randn(1, 3, 97, 113, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)["out"]
        assert use_exportable_pooling(model, True) == 2  # the SP head's two MPMs
        got = model(x)["out"]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def _onnx_module(module: torch.nn.Module, path, channels: int):
    import onnxruntime

    example = torch.randn(2, channels, 37, 41)
    h, w = torch.export.Dim("h", min=2), torch.export.Dim("w", min=2)
    torch.onnx.export(module, (example,), path, dynamo=True, dynamic_shapes={"x": {2: h, 3: w}})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.parametrize(
    "module",
    [
        pytest.param(MixedPooling(8), marks=pytest.mark.slow),
        pytest.param(PyramidPooling(8), marks=pytest.mark.slow),
        ASPP(8, 8, dilations=(1, 2)),
    ],
    ids=["mpm", "ppm", "aspp"],
)
def test_context_modules_export_to_onnx_at_any_size(module, tmp_path):
    """With the export form, at sizes smaller and larger than the example and than the pooling grid."""
    module = module.eval()
    use_exportable_pooling(module, True)
    run_onnx = _onnx_module(module, tmp_path / "m.onnx", 8)
    for hw in [(13, 9), (64, 31), (20, 20)]:
        x = torch.randn(2, 8, *hw)
        with torch.no_grad():
            torch.testing.assert_close(run_onnx(x), module(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # an ONNX export, about 15 s on 2 shared cores
def test_plain_adaptive_pool_does_not_export_to_onnx_at_other_sizes(tmp_path):
    """Why the export form exists: ONNX fixes PyTorch's adaptive pooling to the example's size."""
    module = MixedPooling(8).eval()
    run_onnx = _onnx_module(module, tmp_path / "m.onnx", 8)
    x = torch.randn(2, 8, 13, 9)  # smaller than the example (37 x 41): its gathers read out of bounds
    with pytest.raises(Exception, match="out of"):
        run_onnx(x)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = build_model(tiny_config(), load_pretrained=False).eval()
    # BN statistics of a trained model, so folding and the logits are not trivial
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model


@pytest.mark.slow  # three exports of a whole model, 25-30 s each on 2 shared cores
@pytest.mark.parametrize("fmt, name", [("onnx", "m.onnx"), ("torchscript", "m.ts"), ("exported-program", "m.pt2")])
def test_exported_model_predicts_what_pytorch_predicts_at_unseen_sizes(fmt, name, tiny_model, tmp_path):
    """The reference is the model before folding and the export form: eager PyTorch, as trained."""
    graph = ExportedGraph(prepare_for_export(copy.deepcopy(tiny_model), tiny_config().eval.fast))
    example = example_input((97, 113), batch=2, preprocessing=False, dtype=torch.float32)
    run_exported = load_exported(export(graph, fmt, tmp_path / name, example, dynamic=True), fmt)
    for batch, h, w in UNSEEN:
        x = torch.randn(batch, 3, h, w)
        with torch.no_grad():
            expected = tiny_model(x)["out"]
            got = run_exported(x)
        assert got.shape == (batch, 5, h, w)
        assert (got - expected).abs().max().item() <= 1e-3
        assert (got.argmax(1) == expected.argmax(1)).double().mean().item() >= 0.9999


@pytest.mark.slow  # a whole export (15-30 s on 2 shared cores)
def test_with_preprocessing_the_graph_normalises_uint8_rgb(tiny_model, tmp_path):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    graph = ExportedGraph(tiny_model, mean, std)
    example = example_input((97, 113), batch=2, preprocessing=True, dtype=torch.float32)
    run_exported = load_exported(export(graph, "torchscript", tmp_path / "m.ts", example, dynamic=True), "torchscript")
    image = torch.randint(0, 256, (1, 3, 65, 97), dtype=torch.uint8)
    normalised = (image.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = tiny_model(normalised.float())["out"]
        got = run_exported(image)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def _checkpoint(tmp_path) -> str:
    from utils.config import load_config

    model = build_model(load_config(DEMO, TINY), load_pretrained=False)
    path = tmp_path / "tiny.pth"
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def test_a_missing_package_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    argv = ["--config", DEMO, "--checkpoint", "x.pth", "--format", "onnx", "--output", str(tmp_path / "m.onnx")]
    assert run(export_script.main, argv) == 2
    err = capsys.readouterr().err
    assert err == ("error: --format onnx needs onnxruntime, not installed: pip install -r requirements-export.txt\n")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow  # a whole export (15-30 s on 2 shared cores)
def test_verify_fails_when_the_file_disagrees(tmp_path, monkeypatch, capsys):
    """A tampered classifier bias (class 0 + 1) in the written ONNX file fails --verify with one line."""
    real_export = export_script.export

    def export_then_tamper(*args, **kwargs):
        path = real_export(*args, **kwargs)
        proto = onnx.load(str(path))
        bias = next(t for t in proto.graph.initializer if list(t.dims) == [19])  # the classifier's bias
        values = onnx.numpy_helper.to_array(bias).copy()
        values[0] += 1.0
        bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
        onnx.save(proto, str(path))
        return path

    monkeypatch.setattr(export_script, "export", export_then_tamper)
    output = tmp_path / "m.onnx"
    argv = ["--config", DEMO, "--checkpoint", _checkpoint(tmp_path), "--format", "onnx", "--output", str(output)]
    assert run(export_script.main, [*argv, *TINY, "--dynamic", "--verify", "--verify-sizes", "65", "97"]) == 2
    captured = capsys.readouterr()
    assert "| 65x97 |" in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --verify: {output} does not compute")
    assert "max |logit diff| 1.00e+00" in lines[0]


@pytest.mark.slow  # a whole export (15-30 s on 2 shared cores)
def test_fp16_export_takes_and_returns_half_and_stays_near_fp32(tmp_path, capsys):
    """--fp16: the graph's input and logits are float16; --verify checks it against the PyTorch model in
    fp16 (pixel agreement); and its logits stay within fp16 rounding of the fp32 model's."""
    from utils.config import load_config

    checkpoint, output = _checkpoint(tmp_path), tmp_path / "m.pt2"
    argv = ["--config", DEMO, "--checkpoint", checkpoint, "--format", "exported-program", "--output", str(output)]
    assert run(export_script.main, [*argv, *TINY, "--fp16", "--dynamic", "--verify", "--verify-sizes", "65", "97"]) == 0
    out = capsys.readouterr().out
    assert "normalised fp16 N x 3 x H x W" in out and "verify: passed" in out
    run_exported = load_exported(output, "exported-program")
    model = build_model(load_config(DEMO, TINY), load_pretrained=False).eval()
    model.load_state_dict(torch.load(checkpoint)["model"])
    x = torch.randn(1, 3, 48, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        half, full = run_exported(x.half()), model(x)["out"]
    assert half.dtype == torch.float16 and half.shape == full.shape
    scale = full.abs().max().item()
    assert (half.float() - full).abs().max().item() <= 1e-2 * scale
