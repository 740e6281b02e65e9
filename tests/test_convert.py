"""Official SPNet weights: converted, they give the official logits (float64, to 1e-9).

The state dict has exactly the published checkpoint's key -> shape layout (tests/data) with
distinct random values, so a tensor in the wrong module (two same-shaped convs swapped, a BN's
statistics in another BN) changes the output and fails the comparison.
The expected logits come from ``official_reference.py``, the official forward written over the
official names.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import layout, random_state_dict
from models import build_model
from models.convert import convert_official_spnet, unwrap_state_dict
from models.weights import load_state_dict_checked
from official_reference import official_backbone, official_spnet
from utils.config import config_from_dict, config_to_dict, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def official_r50():
    return random_state_dict(layout("official_spnet_r50_19cls"), dtype=torch.float64, seed=1)


def test_converted_official_weights_give_official_logits(official_r50):
    converted, inferred = convert_official_spnet(official_r50)
    assert len(converted) == len(official_r50)
    cfg = config_from_dict({"model": inferred})
    model = build_model(cfg).double().eval()
    load_state_dict_checked(model, converted, source="official")  # strict: every key used, none missing

    x = torch.randn(1, 3, 97, 129, dtype=torch.float64)
    expected_out, expected_aux = official_spnet(official_r50, x)
    with torch.no_grad():
        out = model(x)["out"]
        aux = torch.nn.functional.interpolate(
            model.aux_head([model.backbone(x)[2]]), x.shape[-2:], mode="bilinear", align_corners=True
        )
    assert expected_out.abs().mean() > 0.1  # a real signal, not a vanishing one
    torch.testing.assert_close(out, expected_out, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(aux, expected_aux, rtol=1e-9, atol=1e-9)


def test_inferred_config_is_the_shipped_cityscapes_r50(official_r50):
    _, inferred = convert_official_spnet(official_r50)
    shipped = config_to_dict(load_config(ROOT / "configs/cityscapes/spnet_r50.yaml").model)
    shipped["backbone"]["pretrained"] = None  # ImageNet init: irrelevant once the whole model is loaded
    assert config_to_dict(config_from_dict({"model": inferred}).model) == shipped


def test_a_swapped_tensor_is_detected(official_r50):
    """The comparison above is sensitive: swapping the 20x20 and 12x12 branch convs changes the logits."""
    swapped = dict(official_r50)
    a, b = "head.strip_pool1.conv2_1.0.weight", "head.strip_pool1.conv2_2.0.weight"
    swapped[a], swapped[b] = official_r50[b], official_r50[a]
    converted, inferred = convert_official_spnet(swapped)
    model = build_model(config_from_dict({"model": inferred})).double().eval()
    model.load_state_dict(converted)
    x = torch.randn(1, 3, 65, 65, dtype=torch.float64)
    with torch.no_grad():
        assert not torch.allclose(model(x)["out"], official_spnet(official_r50, x)[0], rtol=1e-6, atol=1e-6)


def test_spm_off_checkpoint_and_training_wrappers(official_r50):
    no_spm = {k: v for k, v in official_r50.items() if ".spm." not in k}
    wrapped = {"epoch": 180, "state_dict": {"module." + k: v for k, v in no_spm.items()}}  # semseg + DDP
    converted, inferred = convert_official_spnet(unwrap_state_dict(wrapped))
    assert inferred["backbone"]["attention"] is None
    model = build_model(config_from_dict({"model": inferred})).double().eval()
    load_state_dict_checked(model, converted, source="official")
    x = torch.randn(1, 3, 33, 47, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(x)[-1], official_backbone(no_spm, x)[-1], rtol=1e-9, atol=1e-9)


def test_foreign_keys_are_rejected(official_r50):
    bad = dict(official_r50)
    bad["head.psp.conv.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="1 keys are not part of the official SPNet layout.*head.psp.conv.weight"):
        convert_official_spnet(bad)
