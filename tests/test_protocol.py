"""utils/protocol.py: one definition of the test protocol for the config, the inference code and the flags."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from conftest import ROOT
from utils.cli import ArgumentParser, add_protocol_flags, apply_protocol_flags
from utils.config import EvalConfig, load_config
from utils.protocol import Protocol
from utils.schema import ConfigError

DEMO = ROOT / "configs/demo.yaml"
# a valid value for every field, as typed on the command line, and as the config then holds it
EXAMPLES = {
    "profile": (["encoding"], "encoding"),
    "mode": (["whole"], "whole"),
    "crop_size": (["96", "128"], (96, 128)),
    "stride": (["64", "64"], (64, 64)),
    "scales": (["0.5", "1", "1.5"], (0.5, 1.0, 1.5)),
    "flip": ([], False),  # --no-flip
    "base_size": (["1024"], 1024),
    "resize_to": (["2048", "512"], (2048, 512)),
    "window_batch": (["3"], 3),
}


def _flags(argv: list[str]):
    parser = ArgumentParser()
    add_protocol_flags(parser)
    return parser.parse_args(argv)


def test_every_protocol_field_has_a_flag_that_sets_it():
    """The flags come from the fields: a new field gets its flag, and each flag sets its own key."""
    fields = [f.name for f in dataclasses.fields(Protocol)]
    assert sorted(fields) == sorted(EXAMPLES)
    cfg = load_config(DEMO)
    for f in dataclasses.fields(Protocol):
        words, expected = EXAMPLES[f.name]
        flag = "--no-flip" if f.name == "flip" else f.metadata["flag"]
        new = apply_protocol_flags(cfg, _flags([flag, *words]))
        assert getattr(new.eval, f.name) == expected, f.name
        keys = [g.name for g in dataclasses.fields(EvalConfig)]
        assert [k for k in keys if getattr(new.eval, k) != getattr(cfg.eval, k)] == [f.name]  # nothing else moved
    assert apply_protocol_flags(cfg, _flags([])) is cfg  # no flag: the config's protocol


def test_eval_and_predict_offer_the_same_protocol_flags(capsys):
    import predict

    import eval as eval_script

    helps = []
    for module in (eval_script, predict):
        with pytest.raises(SystemExit):
            module.parse_args(["--help"])
        helps.append(" ".join(capsys.readouterr().out.split()))
    for f in dataclasses.fields(Protocol):
        for text in helps:
            assert f.metadata["flag"] in text and f"(eval.{f.name}" in text, f.name


def test_a_flag_error_names_the_flag_and_the_key():
    cfg = load_config(DEMO)
    with pytest.raises(ConfigError, match=r"^--scales: eval.scales\[0\] = -1.0 must be > 0"):
        apply_protocol_flags(cfg, _flags(["--scales", "-1"]))
    with pytest.raises(ConfigError, match=r"^--stride: eval.stride = \[300, 300\] is larger than eval.crop_size"):
        apply_protocol_flags(cfg, _flags(["--stride", "300", "300"]))


def test_the_eval_section_is_a_protocol():
    """No second definition to keep in sync: the inference code takes the config's section as it is."""
    cfg = load_config(DEMO)
    assert isinstance(cfg.eval, Protocol)
    only = cfg.eval.only()
    assert type(only) is Protocol and str(only) == str(cfg.eval)
    assert all(getattr(only, f.name) == getattr(cfg.eval, f.name) for f in dataclasses.fields(Protocol))
    with pytest.raises(ConfigError, match=r"^protocol: crop_size\[1\] = 0 must be >= 1"):
        Protocol(crop_size=(8, 0))  # made in code: the same bounds


def test_resolved_writes_the_profile_defaults_in():
    p = Protocol(crop_size=(9, 9))  # spnet: flip by default, stride ceil(2/3 crop)
    assert (p.flip, p.stride) == (None, None)
    assert (p.resolved().flip, p.resolved().stride) == (True, (6, 6))
    mmseg = Protocol(profile="mmseg", mode="whole")
    assert (mmseg.resolved().flip, mmseg.resolved().stride) == (False, None)


def test_slugs_tell_protocols_apart():
    """eval.py names its default results file with it: two protocols never share a file name."""
    base = Protocol()
    variants = [
        base,
        dataclasses.replace(base, profile="encoding"),
        dataclasses.replace(base, mode="whole"),
        dataclasses.replace(base, crop_size=(512, 1024)),
        dataclasses.replace(base, scales=(0.5, 1.0)),
        dataclasses.replace(base, flip=False),
    ]
    assert len({p.slug() for p in variants}) == len(variants)
    assert base.slug() == "spnet_slide768_s1_flip"
    wide = dataclasses.replace(base, crop_size=(512, 1024), scales=(0.5, 1.0))
    assert wide.slug() == "spnet_slide512x1024_s0.5-1_flip"


def test_reading_a_config_imports_no_torch():
    """The protocol's rules use tensor methods only: the config, the protocol and the flags stay light."""
    code = (
        "import sys; sys.path.insert(0, '.'); import utils.cli, utils.config; "
        "utils.config.load_config('configs/demo.yaml'); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
