"""models/complexity.py: parameters as the official model has them, FLOPs as the convolution formula gives them,
the measured memory of a training step."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from models.complexity import inference_flops, model_info, train_flops_per_image, training_memory
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[1]

# config -> (total, backbone, head, aux head): the official model's parameter counts, measured by
# instantiating the official code (BN affine parameters included, buffers excluded)
OFFICIAL_COUNTS = {
    "cityscapes/spnet_r50.yaml": (47_737_254, 29_748_864, 15_623_699, 2_364_691),
    "cityscapes/spnet_r101.yaml": (66_729_382, 48_740_992, 15_623_699, 2_364_691),
    "ade20k/spnet_r50.yaml": (47_838_124, 29_748_864, 15_690_902, 2_398_358),
    "ade20k/spnet_r101.yaml": (66_830_252, 48_740_992, 15_690_902, 2_398_358),
    "ade20k/ablations/r50_base_fcn.yaml": (33_146_966 + 2_398_358, 23_631_808, 9_515_158, 2_398_358),
    "ade20k/ablations/r50_mpm1.yaml": (34_925_142 + 2_398_358, 23_631_808, 11_293_334, 2_398_358),
    "ade20k/ablations/r50_mpm2.yaml": (39_322_710 + 2_398_358, 23_631_808, 15_690_902, 2_398_358),
    "ade20k/ablations/r50_spm_only.yaml": (39_264_022 + 2_398_358, 29_748_864, 9_515_158, 2_398_358),
    "ade20k/ablations/r50_spnet.yaml": (45_439_766 + 2_398_358, 29_748_864, 15_690_902, 2_398_358),
}


@pytest.mark.parametrize("path", sorted(OFFICIAL_COUNTS))
def test_model_info_counts_the_official_parameters(path):
    p = model_info(load_config(ROOT / "configs" / path), (65, 65))["parameters"]
    assert (p["total"], p["backbone"], p["head"], p["aux_head"]) == OFFICIAL_COUNTS[path]


def test_flop_count_matches_the_conv_formula():
    conv = torch.nn.Conv2d(3, 16, 3, padding=1)
    # 2 FLOPs per multiply-add: 2 * Cout * Cin * k * k * H * W
    assert inference_flops(conv, (13, 17), device="cpu") == 2 * 16 * 3 * 9 * 13 * 17


def test_training_flops_count_forward_and_backward():
    """Two convs: the first needs only its weight gradient (the image needs none), the second both."""

    class TwoConvs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return {"out": self.b(self.a(x))}

    a, b = 2 * 8 * 3 * 9 * 13 * 17, 2 * 4 * 8 * 13 * 17  # forward FLOPs of each conv
    model = TwoConvs()
    assert inference_flops(model, (13, 17), device="cpu") == a + b
    assert train_flops_per_image(model, (13, 17), device="cpu") == 2 * a + 3 * b
    assert all(p.grad is None for p in model.parameters())  # no gradient left behind


def _checkpointed(cfg, stages: tuple[int, ...], heads: bool):
    backbone = dataclasses.replace(cfg.model.backbone, checkpoint_stages=stages)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone=backbone, checkpoint_heads=heads))


def test_training_memory_reports_the_peak_of_a_step():
    """Two steps are measured: the higher peak, what the process held before the second, what that one added."""
    cfg = _checkpointed(tiny_config(), (3, 4), True)
    m = training_memory(cfg, batch=2, size=(64, 96), device="cpu")
    assert m["device"] == "cpu" and m["batch"] == 2 and m["input_size"] == [64, 96]
    assert m["peak_memory_gib"] > m["memory_before_step_gib"] > 0
    assert 0 < m["step_memory_gib"] <= m["peak_memory_gib"] - m["memory_before_step_gib"] + 1e-6
    assert m["measured"] == "resident set of the process (VmHWM, VmRSS)" and math.isfinite(m["loss"])
    assert m["settings"].endswith("compile False; activation checkpointing: stages 3, 4 + heads")


def test_training_flops_count_the_recomputation():
    """Checkpointing computes the checkpointed forward twice: more training FLOPs, the same inference FLOPs."""
    cfg = tiny_config()
    plain, checkpointed = (model_info(c, (65, 97), train=True) for c in (cfg, _checkpointed(cfg, (1, 2, 3, 4), True)))
    assert plain["flops"] == checkpointed["flops"]
    assert plain["train_flops_per_image"] < checkpointed["train_flops_per_image"] < 1.5 * plain["train_flops_per_image"]


@pytest.mark.slow
def test_checkpointing_lowers_the_measured_peak():
    """The tiny SPNet at 256x256: its training step measured 0.09 GiB above the memory held before it, and
    0.065 GiB with every stage and the heads checkpointed (in four runs, to 0.003 GiB); asserted with margin."""
    cfg = tiny_config()
    plain = training_memory(cfg, batch=2, size=(256, 256), device="cpu")["step_memory_gib"]
    checkpointed = training_memory(_checkpointed(cfg, (1, 2, 3, 4), True), batch=2, size=(256, 256), device="cpu")
    assert checkpointed["step_memory_gib"] < 0.85 * plain
