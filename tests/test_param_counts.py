"""Parameter counts equal the official model's to the unit (github.com/Andrew-Qibin/SPNet; docs/model.md).

Models are built on the ``meta`` device: shapes only, no memory, no forward pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import build_model
from utils.config import BackboneConfig, Config, ModelConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def _counts(cfg: Config) -> dict[str, int]:
    with torch.device("meta"):
        model = build_model(cfg, load_pretrained=False)
    n = lambda m: 0 if m is None else sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"total": n(model), "backbone": n(model.backbone), "head": n(model.head), "aux": n(model.aux_head)}


def _spnet(depth: int, classes: int, spm: bool = True, head: str = "sp", head_args=None, aux=True) -> Config:
    return Config(
        model=ModelConfig(
            num_classes=classes,
            backbone=BackboneConfig(depth=depth, attention="strip" if spm else None),
            head=head,
            head_args={head: head_args} if head_args else {},
            aux_head="fcn" if aux else None,
        )
    )


@pytest.mark.parametrize(
    "depth, classes, total, backbone, head, aux",
    [
        (50, 19, 47_737_254, 29_748_864, 15_623_699, 2_364_691),
        (50, 150, 47_838_124, 29_748_864, 15_690_902, 2_398_358),
        (101, 19, 66_729_382, 48_740_992, 15_623_699, 2_364_691),
        (101, 150, 66_830_252, 48_740_992, 15_690_902, 2_398_358),
    ],
)
def test_spnet_with_spm(depth, classes, total, backbone, head, aux):
    assert _counts(_spnet(depth, classes)) == {"total": total, "backbone": backbone, "head": head, "aux": aux}


@pytest.mark.parametrize("depth, total, backbone", [(50, 41_620_198, 23_631_808), (101, 60_612_326, 42_623_936)])
def test_spnet_without_spm(depth, total, backbone):
    counts = _counts(_spnet(depth, 19, spm=False))
    assert (counts["total"], counts["backbone"]) == (total, backbone)


ABLATIONS = {  # setting -> (spm, head, head_args); counts: R50/19, R50/150, R101/19, R101/150, without aux
    "base_fcn": ((False, "fcn", {}), (33_079_763, 33_146_966, 52_071_891, 52_139_094)),
    "mpm1": ((False, "sp", {"num_context": 1}), (34_857_939, 34_925_142, 53_850_067, 53_917_270)),
    "mpm2": ((False, "sp", {"num_context": 2}), (39_255_507, 39_322_710, 58_247_635, 58_314_838)),
    "spm_only": ((True, "fcn", {}), (39_196_819, 39_264_022, 58_188_947, 58_256_150)),
    "spnet": ((True, "sp", {"num_context": 2}), (45_372_563, 45_439_766, 64_364_691, 64_431_894)),
}


@pytest.mark.parametrize("setting", sorted(ABLATIONS))
def test_ablation_settings(setting):
    (spm, head, head_args), expected = ABLATIONS[setting]
    got = tuple(
        _counts(_spnet(depth, classes, spm, head, head_args, aux=False))["total"]
        for depth, classes in ((50, 19), (50, 150), (101, 19), (101, 150))
    )
    assert got == expected


@pytest.mark.parametrize(
    "path, total",
    [
        ("cityscapes/spnet_r50.yaml", 47_737_254),
        ("cityscapes/spnet_r101.yaml", 66_729_382),
        ("ade20k/spnet_r50.yaml", 47_838_124),
        ("ade20k/spnet_r101.yaml", 66_830_252),
        ("ade20k/ablations/r50_base_fcn.yaml", 33_146_966 + 2_398_358),
        ("ade20k/ablations/r50_mpm1.yaml", 34_925_142 + 2_398_358),
        ("ade20k/ablations/r50_mpm2.yaml", 39_322_710 + 2_398_358),
        ("ade20k/ablations/r50_spm_only.yaml", 39_264_022 + 2_398_358),
        ("ade20k/ablations/r50_spnet.yaml", 45_439_766 + 2_398_358),
    ],
)
def test_shipped_configs(path, total):
    """The ablation configs train with the aux head (as the paper); the table counts exclude it."""
    counts = _counts(load_config(ROOT / "configs" / path))
    assert counts["total"] == total


def test_no_aux_variant_of_shipped_config():
    cfg = load_config(ROOT / "configs/ade20k/ablations/r50_mpm1.yaml", ["model.aux_head=null"])
    assert _counts(cfg)["total"] == 34_925_142
