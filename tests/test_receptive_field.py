"""Effective receptive fields (utils/receptive_field.py) against maps known by hand or computed naively,
their statistics against hand-computed values, and scripts/receptive_field.py on two small models."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import ROOT
from models.modules.strip_pooling import StripPooling
from utils.receptive_field import effective_receptive_field, output_mask, statistics
from utils.visualize import HEAT_ANCHORS, heatmap, titled_grid

sys.path.insert(0, str(ROOT / "scripts"))

import receptive_field as script  # noqa: E402

F64 = torch.float64


def _images(n: int, h: int, w: int, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, h, w, generator=g, dtype=F64) for _ in range(n)]


def _naive_linear_erf(model: nn.Module, h: int, w: int, mode: str = "pixel") -> torch.Tensor:
    """The ERF of a linear model without autograd: the output's centre sum for a unit input at each
    (channel, pixel), less its value at zero input (the biases); |.| summed over the channels."""
    with torch.no_grad():
        zero = model(torch.zeros(1, 3, h, w, dtype=F64))
        mask = output_mask(zero.shape[-2], zero.shape[-1], mode).to(F64)
        base = (zero * mask).sum()
        erf = torch.zeros(h, w, dtype=F64)
        for c in range(3):
            for i in range(h):
                for j in range(w):
                    x = torch.zeros(1, 3, h, w, dtype=F64)
                    x[0, c, i, j] = 1
                    erf[i, j] += ((model(x) * mask).sum() - base).abs()
    return erf / erf.sum()


def _support(erf: torch.Tensor) -> tuple[int, int, int, int]:
    """(first row, last row, first column, last column) of the non-zero pixels."""
    rows, cols = erf.abs().gt(0).any(1).nonzero().flatten(), erf.abs().gt(0).any(0).nonzero().flatten()
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def test_single_3x3_conv_is_its_kernels_summed_over_output_channels():
    conv = nn.Conv2d(3, 4, 3, padding=1).to(F64)
    erf = effective_receptive_field(conv, _images(2, 9, 11), dtype=F64)
    assert _support(erf) == (3, 5, 4, 6)  # 3x3 around the centre (4, 5)
    pattern = conv.weight.detach().sum(0).abs().sum(0)  # sum over outputs, |.|, sum over inputs
    torch.testing.assert_close(erf[3:6, 4:7], pattern / pattern.sum(), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(erf, _naive_linear_erf(conv, 9, 11), rtol=1e-12, atol=1e-15)


def test_1x1_conv_is_one_pixel():
    erf = effective_receptive_field(nn.Conv2d(3, 2, 1).to(F64), _images(1, 7, 8), dtype=F64)
    expected = torch.zeros(7, 8, dtype=F64)
    expected[3, 4] = 1
    assert torch.equal(erf, expected)
    stats = statistics(erf)
    assert (stats["area50"], stats["area95"], stats["height95"], stats["width95"]) == (1, 1, 1, 1)
    assert stats["std_x"] == stats["std_y"] == 0 and math.isnan(stats["anisotropy"])


def test_two_stacked_3x3_convs_are_5x5():
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.Conv2d(5, 2, 3, padding=1)).to(F64)
    erf = effective_receptive_field(model, _images(1, 11, 11), dtype=F64)
    assert _support(erf) == (3, 7, 3, 7)
    assert (erf[3:8, 3:8] > 0).all()
    torch.testing.assert_close(erf, _naive_linear_erf(model, 11, 11), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("mode", ["row", "column"])
def test_row_and_column_modes_of_a_1x1_conv_are_the_centre_row_and_column(mode):
    conv = nn.Conv2d(3, 2, 1).to(F64)
    erf = effective_receptive_field(conv, _images(1, 6, 9), mode=mode, dtype=F64)
    expected = torch.zeros(6, 9, dtype=F64)
    if mode == "row":
        expected[3, :] = 1 / 9
    else:
        expected[:, 4] = 1 / 6
    torch.testing.assert_close(erf, expected, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(erf, _naive_linear_erf(conv, 6, 9, mode), rtol=1e-12, atol=1e-15)


class StripMean(nn.Module):
    """The bare strip pooling: each pixel becomes the mean of its row (dim 3) or of its column (dim 2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dim, keepdim=True).expand_as(x)


def test_horizontal_strip_pooling_sees_the_whole_row_and_nothing_else():
    h, w = 7, 12
    erf = effective_receptive_field(StripMean(3), _images(1, h, w), dtype=F64)
    expected = torch.zeros(h, w, dtype=F64)
    expected[3, :] = 1 / w
    torch.testing.assert_close(erf, expected, rtol=1e-12, atol=1e-15)
    stats = statistics(erf)
    assert stats["area50"] == 6 and stats["area95"] == 12  # 6/12 = 50%; 11/12 < 95%
    assert (stats["height95"], stats["width95"]) == (1, w)
    assert stats["std_y"] == 0 and stats["anisotropy"] == 0
    assert stats["std_x"] == pytest.approx(math.sqrt((w**2 - 1) / 12))  # a uniform distribution on 0..w-1


def test_vertical_strip_pooling_sees_the_whole_column():
    h, w = 10, 5
    erf = effective_receptive_field(StripMean(2), _images(2, h, w), dtype=F64)
    expected = torch.zeros(h, w, dtype=F64)
    expected[:, 2] = 1 / h
    torch.testing.assert_close(erf, expected, rtol=1e-12, atol=1e-15)
    stats = statistics(erf)
    assert (stats["area50"], stats["area95"], stats["height95"], stats["width95"]) == (5, 10, h, 1)
    assert stats["std_x"] == 0 and math.isnan(stats["anisotropy"])  # no width: the ratio is undefined
    assert stats["std_y"] == pytest.approx(math.sqrt((h**2 - 1) / 12))


def test_spm_sees_exactly_the_centre_row_and_column():
    """SPNet's SPM: y = x * gate(conv3(row means), conv3(column means)), so the centre output sees the three
    centre rows and the three centre columns whole (the 3-tap convs along the strips), and no pixel off them."""
    h, w = 9, 13
    spm = StripPooling(3).to(F64)
    for bn in (spm.bn_h, spm.bn_w):  # running statistics of a trained model, not the identity
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2)
    erf = effective_receptive_field(spm, _images(3, h, w), dtype=F64)
    cross = torch.zeros(h, w, dtype=torch.bool)
    cross[3:6, :] = cross[:, 5:8] = True
    assert (erf[cross] > 0).all() and (erf[~cross] == 0).all()
    assert erf[4, 6] > 0.5  # the pixel itself (x times its gate) dominates


def test_statistics_against_hand_computed_values():
    erf = torch.zeros(4, 5, dtype=F64)
    erf[1, 1], erf[1, 2], erf[3, 4] = 0.5, 0.3, 0.2
    stats = statistics(7 * erf)  # normalised first
    assert stats["size"] == [4, 5]
    assert (stats["area50"], stats["area95"]) == (1, 3)  # 0.5 holds 50% exactly; 95% needs all three
    assert (stats["area50_fraction"], stats["area95_fraction"]) == (1 / 20, 3 / 20)
    assert (stats["height95"], stats["width95"]) == (3, 4)  # rows 1..3, columns 1..4
    # along y: 0.8 at row 1, 0.2 at row 3 -> mean 1.4, variance 0.8 * 0.4^2 + 0.2 * 1.6^2 = 0.64
    assert stats["std_y"] == pytest.approx(0.8)
    # along x: 0.5 at 1, 0.3 at 2, 0.2 at 4 -> mean 1.9, variance 0.5 * 0.81 + 0.3 * 0.01 + 0.2 * 4.41 = 1.29
    assert stats["std_x"] == pytest.approx(math.sqrt(1.29))
    assert stats["anisotropy"] == pytest.approx(0.8 / math.sqrt(1.29))


def test_statistics_keep_tied_pixels_in_the_region():
    erf = torch.zeros(5, 6, dtype=F64)
    erf[2, 1:5] = 0.25  # four equal pixels: 50% needs two of them, the 95% region all four
    stats = statistics(erf)
    assert (stats["area50"], stats["area95"], stats["height95"], stats["width95"]) == (2, 4, 1, 4)


def test_deterministic_leaves_the_model_and_the_global_random_state_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    model[1].running_mean.uniform_(-1, 1)
    model[0].weight.requires_grad_(False)
    stats_before = model[1].running_mean.clone()
    state = torch.get_rng_state()
    images = [x.float() for x in _images(2, 10, 10)]
    first = effective_receptive_field(model, images)
    second = effective_receptive_field(model, images)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, second) and first.dtype == F64 and first.sum().item() == pytest.approx(1)
    assert not model.training and torch.equal(model[1].running_mean, stats_before)  # eval mode: no update
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True, True, True]
    assert all(p.grad is None for p in model.parameters())


def test_dict_output_and_an_output_smaller_than_the_input():
    class Strided(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 2, stride=2)

        def forward(self, x):
            return {"out": self.conv(x)}

    model = Strided().to(F64)
    erf = effective_receptive_field(model, _images(1, 8, 8), dtype=F64)
    assert _support(erf) == (4, 5, 4, 5)  # output (2, 2) of a 4x4 map reads input rows and columns 4-5
    torch.testing.assert_close(erf, _naive_linear_erf(lambda x: model(x)["out"], 8, 8), rtol=1e-12, atol=1e-15)


def test_heatmap_colours_linear_and_log():
    v = np.array([[0.0, 0.5, 1.0]])
    rgb = heatmap(v)
    assert (rgb[0, 0] == HEAT_ANCHORS[0]).all() and (rgb[0, 2] == HEAT_ANCHORS[-1]).all()
    assert (rgb[0, 1] == HEAT_ANCHORS[2]).all()  # half the maximum: the middle anchor
    log = heatmap(np.array([[1e-6, 1e-5, 1e-2 * 10**-1.5, 1e-2]]), log_decades=3)
    # 1e-6 is below the 3 decades shown, 1e-5 their floor (both dark); 10^-3.5 is 1.5 decades down: the middle
    assert (log[0, 0] == HEAT_ANCHORS[0]).all() and (log[0, 1] == HEAT_ANCHORS[0]).all()
    assert (log[0, 2] == HEAT_ANCHORS[2]).all() and (log[0, 3] == HEAT_ANCHORS[-1]).all()


def test_titled_grid_lays_tiles_in_rows():
    tiles = [np.full((20, 30, 3), k, np.uint8) for k in range(5)]
    grid = titled_grid(tiles, [f"t{k}" for k in range(5)], columns=2, title="caption")
    assert grid.shape[1] == 2 * 30 + 4  # two tiles and a gap
    for k in range(5):  # each tile appears, whole, below its title
        found = (grid == k).all(-1)
        assert found.sum() >= 20 * 30


def test_script_draws_and_measures_each_model(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out, js = tmp_path / "erf.png", tmp_path / "erf.json"
    fcn = ["model.backbone.attention=null", "model.head=fcn"]
    argv = ["--config", "configs/demo.yaml", "--random", "--images", "2", "--size", "32", "48", "--seed", "3"]
    argv += ["--out", str(out), "--json", str(js), "--block", "2", "--model", "Base FCN", *fcn, "--model", "SPNet"]
    state = torch.get_rng_state()
    assert script.run(script.main, argv) == 0
    assert torch.equal(torch.get_rng_state(), state)
    result = json.loads(js.read_text())
    assert [m["name"] for m in result["models"]] == ["Base FCN", "SPNet"]
    assert result["models"][0]["overrides"] == fcn
    # the same map from the library: the model initialised from the seed, the same random images
    images = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    model = script.load_model("configs/demo.yaml", None, fcn, seed=3)
    expected = statistics(effective_receptive_field(model, [images[:1], images[1:]]))
    got = {k: v for k, v in result["models"][0].items() if k in expected}
    assert got["area50"] == expected["area50"] and got["area95"] == expected["area95"]
    assert got["std_x"] == pytest.approx(expected["std_x"]) and got["std_y"] == pytest.approx(expected["std_y"])
    assert Image.open(out).size[0] == 2 * 24 + 4  # two tiles of 2x2 blocks and a gap


def test_script_user_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    base = ["--config", "configs/demo.yaml", "--random", "--out", str(tmp_path / "e.png")]
    assert script.run(script.main, [*base, "--model", "A", "checkpoint=nothing.pth"]) == 2
    assert "checkpoint nothing.pth: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.parse_args([*base, "--checkpoint", "x.pth", "--model", "A"])
    assert "--checkpoint is for the config's model alone" in capsys.readouterr().err
