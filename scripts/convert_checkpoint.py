"""Convert weights from other codebases into checkpoints our ``train.py`` / ``eval.py`` accept.

    # an official SPNet model (github.com/Andrew-Qibin/SPNet) -> a full model checkpoint
    python scripts/convert_checkpoint.py --format official-spnet --input train_epoch_180.pth --output spnet_r101.pth

    # ImageNet ResNets -> backbone init (model.backbone.pretrained=...)
    python scripts/convert_checkpoint.py --format encoding-resnet --input resnet101-2a57e44d.pth --output r101_enc.pth
    python scripts/convert_checkpoint.py --format torchvision-resnet --input resnet50-0676ba61.pth --output r50_tv.pth

The output is a plain dict: ``{"model": state_dict, "config": {"model": ...}, "meta": ...}`` for full
models, ``{"backbone": state_dict, "meta": ...}`` for backbones. ``meta`` records the source file,
its SHA-256 and the format. Every output is checked by loading it strictly into the model it
describes (``--config`` checks it against a config of yours as well).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from _root import ROOT  # (puts the repository root on sys.path)
from models import build_backbone, build_model, build_norm_layer
from models.convert import (
    FORMATS,
    convert_imagenet_resnet,
    convert_official_spnet,
    describe_layout,
    describe_resnet,
    unwrap_state_dict,
)
from models.weights import KNOWN_WEIGHTS, check_state_dict, file_digests, read_checkpoint
from utils.checkpoint import save_atomic
from utils.cli import ArgumentParser, add_debug_flag, run
from utils.config import BackboneConfig, Config, config_from_dict, config_to_dict, load_config


def convert(fmt: str, source: Path, output: Path, config_path: str | None = None) -> dict:
    """Convert ``source`` and write ``output``; returns the written dict (without tensors' copies)."""
    digests = file_digests(source, ("sha1", "sha256"))
    known = KNOWN_WEIGHTS.get(source.name)
    if known is not None and digests["sha1"] != known.sha1:
        raise ValueError(f"{source}: SHA-1 {digests['sha1']} differs from the published {known.sha1}; corrupt copy?")
    state_dict = unwrap_state_dict(read_checkpoint(source, "input checkpoint"))
    meta = {"source": str(source), "source_sha256": digests["sha256"], "format": fmt, "torch": str(torch.__version__)}

    if fmt == "official-spnet":
        converted, model_overrides = convert_official_spnet(state_dict)
        cfg = config_from_dict({"model": model_overrides}, source=f"inferred from {source}")
        with torch.device("meta"):  # shapes only: checks the layout without allocating the model
            model = build_model(cfg, load_pretrained=False)
        check_state_dict(model, converted, source=f"converted {source}")
        result = {"model": converted, "config": {"model": config_to_dict(cfg.model)}, "meta": meta}
        print(
            f"official SPNet: {describe_layout(describe_resnet(converted, 'backbone.'))}, "
            f"{cfg.model.num_classes} classes, SPM {'on' if cfg.model.backbone.attention else 'off'}, "
            f"{model_overrides['head_args']['sp']['num_context']} MPMs, "
            f"aux head {'yes' if cfg.model.aux_head else 'no'}"
        )
        matches = [str(p.relative_to(ROOT)) for p in _matching_configs(cfg)]
        if matches:
            print(f"matches: {', '.join(matches)}")
    else:
        converted, dropped = convert_imagenet_resnet(state_dict, fmt)
        layout = describe_resnet(converted)
        backbone_cfg = BackboneConfig(
            depth=layout["depth"] or 50,
            stage_blocks=None if layout["depth"] else layout["stage_blocks"],
            base_width=layout["base_width"],
            deep_stem=layout["stem"] == "deep",
            attention=None,
            multi_grid=None if layout["stage_blocks"][-1] != 3 else (1, 2, 4),
        )
        with torch.device("meta"):
            backbone = build_backbone(backbone_cfg, build_norm_layer("bn"), load_pretrained=False)
        check_state_dict(backbone, converted, source=f"converted {source}")
        result = {"backbone": converted, "meta": {**meta, "dropped": dropped}}
        print(f"{fmt}: {describe_layout(layout)}; dropped {', '.join(dropped) or 'nothing'}")
        deep_stem = str(backbone_cfg.deep_stem).lower()
        print(f"use it with: model.backbone.pretrained={output} model.backbone.deep_stem={deep_stem}")

    if config_path is not None:
        cfg = load_config(config_path)
        with torch.device("meta"):
            model = build_model(cfg, load_pretrained=False)
        if "model" in result:
            check_state_dict(model, result["model"], source=f"converted {source}")
        else:
            check_state_dict(
                model.backbone,
                result["backbone"],
                source=f"converted {source}",
                allow_missing=lambda k: ".attention." in k,
            )
        print(f"checked against {config_path}: fits")

    save_atomic(result, output)
    print(f"wrote {output}")
    return result


def _matching_configs(cfg: Config) -> list[Path]:
    """Shipped configs whose model section equals ``cfg.model`` (ignoring the backbone init path)."""
    wanted = config_to_dict(cfg.model)
    matches = []
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        try:
            candidate = config_to_dict(load_config(path).model)
        except ValueError:
            continue
        candidate["backbone"]["pretrained"] = wanted["backbone"]["pretrained"]
        if candidate == wanted:
            matches.append(path)
    return matches


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--config", help="also check the result against this config's model")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.input.resolve() == args.output.resolve():
        parser.error("--output must differ from --input")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    convert(args.format, args.input, args.output, args.config)


if __name__ == "__main__":
    sys.exit(run(main))
