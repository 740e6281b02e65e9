"""The user-facing scripts: model_info, convert_checkpoint and benchmark, run as users run them."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision

from conftest import layout, random_state_dict
from datasets import build_dataset
from datasets.synthetic import CLASSES as WORLD_CLASSES
from models import build_model
from models.backbones import ResNet
from models.weights import IncompatibleWeightsError, load_model_weights
from official_reference import official_spnet
from test_complexity import OFFICIAL_COUNTS
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import benchmark  # noqa: E402
import compare_official  # noqa: E402
import convert_checkpoint  # noqa: E402
import module_table  # noqa: E402


def test_model_info_cli_json():
    out = subprocess.run(
        [
            sys.executable,
            "scripts/model_info.py",
            "--config",
            "configs/cityscapes/spnet_r101.yaml",
            "--size",
            "769",
            "769",
            "--json",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info = json.loads(out)
    p = info["parameters"]
    assert (p["total"], p["backbone"], p["head"], p["aux_head"]) == OFFICIAL_COUNTS["cityscapes/spnet_r101.yaml"]
    assert p["inference"] == 64_364_691 and info["input_size"] == [769, 769]
    assert info["flops"] > 1e12  # ~1 TFLOP at 769x769 for dilated R101


def test_model_info_memory_measures_a_training_step_of_the_config():
    """--memory: the peak memory of a training step with the config's overrides (here activation checkpointing)."""
    command = [sys.executable, "scripts/model_info.py", "--config", "configs/demo.yaml", "--memory", "--batch", "2"]
    command += ["--size", "64", "96", "--device", "cpu", "--json", "model.backbone.checkpoint_stages=[3, 4]"]
    info = json.loads(subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    m = info["training_memory"]
    assert (m["device"], m["batch"], m["input_size"]) == ("cpu", 2, [64, 96])
    assert m["peak_memory_gib"] > m["memory_before_step_gib"] > 0 and m["step_memory_gib"] > 0
    assert "amp bf16" in m["settings"] and m["settings"].endswith("activation checkpointing: stages 3, 4")


def test_convert_official_checkpoint_end_to_end(tmp_path, capsys):
    official = random_state_dict(layout("official_spnet_r50_19cls"), dtype=torch.float32, seed=3)
    torch.save({"epoch": 180, "state_dict": {"module." + k: v for k, v in official.items()}}, tmp_path / "official.pth")
    convert_checkpoint.main(
        [
            "--format",
            "official-spnet",
            "--input",
            str(tmp_path / "official.pth"),
            "--output",
            str(tmp_path / "ours.pth"),
            "--config",
            str(ROOT / "configs/cityscapes/spnet_r50.yaml"),
        ]
    )
    printed = capsys.readouterr().out
    assert "matches: configs/cityscapes/spnet_r50.yaml" in printed and "fits" in printed

    model = build_model(load_config(ROOT / "configs/cityscapes/spnet_r50.yaml"), load_pretrained=False).eval()
    report = load_model_weights(model, tmp_path / "ours.pth")
    assert len(report.loaded) == len(official)
    saved = torch.load(tmp_path / "ours.pth", weights_only=True)
    assert saved["meta"]["format"] == "official-spnet" and len(saved["meta"]["source_sha256"]) == 64
    assert saved["config"]["model"]["backbone"]["depth"] == 50
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["out"], official_spnet(official, x)[0], rtol=1e-4, atol=1e-4)

    other = build_model(load_config(ROOT / "configs/cityscapes/spnet_r101.yaml"), load_pretrained=False)
    with pytest.raises(IncompatibleWeightsError, match="(?s)missing in the file:.*layer3.6"):
        load_model_weights(other, tmp_path / "ours.pth")


def test_convert_encoding_backbone_and_use_it_as_init(tmp_path):
    source = ResNet(50, stage_blocks=(1, 1, 2, 3), base_width=8).state_dict()
    source["fc.weight"], source["fc.bias"] = torch.randn(1000, 256), torch.randn(1000)
    torch.save(source, tmp_path / "enc.pth")
    convert_checkpoint.main(
        ["--format", "encoding-resnet", "--input", str(tmp_path / "enc.pth"), "--output", str(tmp_path / "bb.pth")]
    )
    saved = torch.load(tmp_path / "bb.pth", weights_only=True)
    assert "fc.weight" not in saved["backbone"] and saved["meta"]["dropped"] == ["fc.bias", "fc.weight"]

    cfg = load_config(
        ROOT / "configs/cityscapes/spnet_r50.yaml",
        [
            "model.backbone.stage_blocks=[1, 1, 2, 3]",
            "model.backbone.base_width=8",
            f"model.backbone.pretrained={tmp_path / 'bb.pth'}",
        ],
    )
    model = build_model(cfg)
    assert torch.equal(model.backbone.layer4[2].conv2.weight, source["layer4.2.conv2.weight"])
    with pytest.raises(IncompatibleWeightsError, match="backbone weights only"):
        load_model_weights(model, tmp_path / "bb.pth")


def test_convert_rejects_the_wrong_format(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "tv18.pth")
    with pytest.raises(ValueError, match="the standard stem, which is the 'torchvision-resnet' format"):
        convert_checkpoint.main(
            ["--format", "encoding-resnet", "--input", str(tmp_path / "tv18.pth"), "--output", str(tmp_path / "o.pth")]
        )
    convert_checkpoint.main(
        ["--format", "torchvision-resnet", "--input", str(tmp_path / "tv18.pth"), "--output", str(tmp_path / "o.pth")]
    )
    assert torch.load(tmp_path / "o.pth", weights_only=True)["meta"]["format"] == "torchvision-resnet"
    with pytest.raises(ValueError, match="not part of the official SPNet layout"):
        convert_checkpoint.main(
            ["--format", "official-spnet", "--input", str(tmp_path / "tv18.pth"), "--output", str(tmp_path / "p.pth")]
        )


def test_benchmark_runs_a_training_step():
    cfg = load_config(ROOT / "configs/demo.yaml")
    result = benchmark.benchmark(cfg, size=(64, 96), batch=2, mode="train", iters=2, warmup=1)
    assert result["images_per_second"] > 0 and result["seconds_per_iter"] > 0 and result["batch"] == 2


def test_benchmark_versus_times_two_settings_on_the_same_weights():
    """--versus alternates the config and the config with overrides; fast paths change no number."""
    cfg = load_config(ROOT / "configs/demo.yaml")
    plain = load_config(ROOT / "configs/demo.yaml", ["eval.fast=false", "eval.fast.reuse_memory=true"])
    r = benchmark.benchmark(cfg, size=(64, 96), mode="inference", iters=2, warmup=1, versus=plain)
    assert r["settings"].startswith("folding: folded 55 conv+BN pairs")  # every pair the demo model runs
    assert r["versus"]["settings"].startswith("folding: off")
    assert r["max_abs_logit_difference"] < 1e-4 * max(1.0, r["max_abs_logit"])
    assert r["speedup_of_versus"] == pytest.approx(r["seconds_per_iter"] / r["versus"]["seconds_per_iter"])
    assert r["gflops_per_iter"] == pytest.approx(r["versus"]["gflops_per_iter"], rel=0.01)  # same convs
    fp32 = ["train.amp=none"]  # the demo trains in bf16, whose rounding differs between memory formats
    train_fast = load_config(ROOT / "configs/demo.yaml", fp32)
    train_plain = load_config(ROOT / "configs/demo.yaml", [*fp32, "train.fast=false", "train.fast.reuse_memory=true"])
    t = benchmark.benchmark(train_fast, size=(64, 96), batch=2, mode="train", iters=1, warmup=1, versus=train_plain)
    assert t["first_loss"] == pytest.approx(t["versus"]["first_loss"], rel=1e-5)  # same weights, same dropout
    assert t["gflops_per_iter"] > 2 * r["gflops_per_iter"]  # backward: about twice the forward again
    with pytest.raises(ValueError, match="cannot switch fast.reuse_memory"):
        benchmark.benchmark(cfg, size=(64, 96), mode="train", versus=load_config(ROOT / "configs/demo.yaml",
                                                                                 ["train.fast=false"]))  # fmt: skip


def test_benchmark_versus_another_architecture_compares_costs_only():
    """--versus model.* builds a second architecture with its own weights: the SP head and the
    backbone SPMs against the FCN baseline, parameters as the models count them, fewer FLOPs."""
    cfg = load_config(ROOT / "configs/demo.yaml")
    fcn = load_config(ROOT / "configs/demo.yaml", ["model.head=fcn", "model.backbone.attention=null"])
    r = benchmark.benchmark(cfg, size=(64, 96), mode="inference", iters=1, warmup=1, versus=fcn)
    assert r["same_model"] is False and "max_abs_logit_difference" not in r
    count = [sum(p.numel() for p in build_model(c, load_pretrained=False).parameters()) for c in (cfg, fcn)]
    assert (r["params_millions"], r["versus"]["params_millions"]) == (count[0] / 1e6, count[1] / 1e6)
    assert count[0] == 4_190_470 and count[1] < count[0]
    assert r["versus"]["gflops_per_iter"] < r["gflops_per_iter"]


def test_compare_official_names_a_worker_the_kernel_killed():
    """A worker killed by the out-of-memory killer (SIGKILL) leaves a broken pipe; the parent says
    which side died, with its exit code and what to shrink, as a user error (one line)."""
    context = multiprocessing.get_context("fork")
    killed, alive = context.Process(target=time.sleep, args=(60,)), context.Process(target=time.sleep, args=(0,))
    killed.start(), alive.start()
    os.kill(killed.pid, signal.SIGKILL)
    error = compare_official._worker_died(["official", "exact"], [killed, alive])
    assert isinstance(error, ValueError)
    assert str(error).startswith("the worker of official (exit code -9) died; exit code -9 is usually the out-of")
    assert "fewer --settings, a smaller --batch or --size" in str(error)


def test_compare_official_refuses_what_the_official_code_cannot_build(tmp_path):
    ppm = load_config(ROOT / "configs/cityscapes/spnet_r50.yaml", ["model.head=ppm", "model.backbone.depth=18"])
    with pytest.raises(ValueError, match=r"model.head = 'ppm' \(official: 'sp'\).*depth = 18"):
        compare_official.official_arguments(ppm)
    r101 = load_config(ROOT / "configs/cityscapes/spnet_r101.yaml")
    assert compare_official.official_arguments(r101) == {"nclass": 19, "backbone": "resnet101", "spm_on": True}
    with pytest.raises(FileNotFoundError, match="no models/spnet.py there; pass a clone of"):
        compare_official.official_package(tmp_path)


@pytest.mark.slow
def test_compare_official_times_both_sides_on_the_same_function():
    """With a stand-in for the official package (tests/fake_official): each side in its own process,
    alternating; our converted model gives the official logits; the official inference also runs
    its auxiliary head (more FLOPs)."""
    r = compare_official.compare(
        official=str(ROOT / "tests/fake_official"), config=str(ROOT / "configs/cityscapes/spnet_r50.yaml"),
        overrides=[], mode="inference", size=(64, 64), batch=1, device="cpu", threads=1,
        settings=["plain", "plain-reuse-memory", "exact"], pairs=2, warmup=1,
    )  # fmt: skip
    sides = r["sides"]
    assert list(sides) == ["official", "plain", "plain-reuse-memory", "exact"]
    assert [s["reuse_memory"] for s in sides.values()] == [False, False, True, True]  # each worker its own malloc
    for side in sides.values():
        assert len(side["all_seconds"]) == 2 and side["peak_memory_gib"] > 0
        assert side["ratio_to_official"] == pytest.approx(side["seconds"] / sides["official"]["seconds"])
    assert sides["plain"]["max_abs_logit_difference_to_official"] < 1e-4 * r["max_abs_official_logit"]
    assert sides["exact"]["max_abs_logit_difference_to_official"] < 1e-4 * r["max_abs_official_logit"]
    assert sides["plain-reuse-memory"]["max_abs_logit_difference_to_official"] == pytest.approx(
        sides["plain"]["max_abs_logit_difference_to_official"], abs=0
    )  # bit-identical: memory reuse changes where tensors live, not what they hold
    assert sides["official"]["gflops"] > sides["plain"]["gflops"] > 0


def test_module_table_spnet_row_has_the_official_count():
    rows = module_table.head_rows(2048, (97, 97), 19, repeats=0, warmup=0)
    sp_rows = {"sp (1 MPM)", "sp (2 MPMs, SPNet)"}  # SPNet's SP head with 1 and 2 MPMs
    assert set(rows) == {"fcn", *sp_rows, "aspp", "cc", "gc", "nonlocal", "ppm", "rfb", "spp", "ssh"}
    assert rows["sp (2 MPMs, SPNet)"]["parameters"] == 15_623_699  # the official SP head, 19 classes
    assert rows["fcn"]["parameters"] == 9_447_955
    conv_flops = 2 * 2048 * 512 * 9 * 97 * 97 + 2 * 512 * 19 * 97 * 97  # FCN: 3x3 conv + 1x1 classifier
    assert rows["fcn"]["flops"] == conv_flops and rows["fcn"]["seconds"] is None


@pytest.mark.slow
def test_module_table_rewrites_only_its_block(tmp_path):
    out = tmp_path / "modules.md"
    out.write_text(f"# Modules\n\nhand-written\n\n{module_table.BEGIN}\nold table\n{module_table.END}\n\nmore text\n")
    argv = ["--channels", "64", "--attention-channels", "16", "--size", "65", "81", "--repeats", "1", "--out", str(out)]
    module_table.main(argv)
    text = out.read_text()
    assert text.startswith("# Modules\n\nhand-written") and text.endswith("more text\n") and "old table" not in text
    assert f"Generated by `python scripts/module_table.py {' '.join(argv)}`" in text
    for name in [*module_table.HEAD_ROWS, *module_table.BLOCK_ATTENTION]:
        assert re.search(rf"^\| {re.escape(name)} \| [\d,]+ \| [\d.,]+ \| [\d,]+ ms \|", text, re.M), name
    assert "| `configs/ade20k/compare/head_mpm2.yaml` | 47,838,124 | 45,439,766 |" in text
    assert "| `configs/cityscapes/spnet_r101.yaml` | 66,729,382 | 64,364,691 |" in text


SMALL_MODULE_TABLE = ["--channels", "64", "--attention-channels", "16", "--no-latency"]


def test_module_table_prints_unless_told_where_to_write(tmp_path, monkeypatch, capsys):
    """Without --out it writes no file (it used to rewrite docs/modules.md); with --out only that file."""
    written = []
    monkeypatch.setattr(module_table, "write", lambda path, block: written.append(path))
    pair = module_table.MODEL_TABLES["Cityscapes, R101, test-set pair"]
    monkeypatch.setattr(module_table, "MODEL_TABLES", {"Cityscapes, R101, test-set pair": pair})
    module_table.main([*SMALL_MODULE_TABLE, "--size", "65", "81"])
    printed = capsys.readouterr().out
    assert written == [] and printed.startswith(module_table.BEGIN) and printed.rstrip().endswith(module_table.END)
    assert "| `configs/cityscapes/spnet_r101.yaml` | 66,729,382 | 64,364,691 |" in printed
    copy = tmp_path / "modules.md"  # a copy: a test never writes the real doc
    copy.write_text((ROOT / "docs/modules.md").read_text())
    module_table.main([*SMALL_MODULE_TABLE, "--size", "65", "81", "--out", str(copy)])
    assert written == [copy] and capsys.readouterr().out == f"wrote {copy}\n"


def test_module_table_captions_follow_the_crop_size(monkeypatch, capsys):
    """--size is the crop; heads and attentions run on its 1/8 feature, and the captions say both."""
    monkeypatch.setattr(module_table, "MODEL_TABLES", {})  # the whole-model tables have their own sizes
    module_table.main([*SMALL_MODULE_TABLE, "--size", "512", "1024"])
    text = capsys.readouterr().out
    assert "**Context heads** on a 64 x 64 x 128 feature (a 512x1024 crop at output stride 8), 19 classes" in text
    assert "one module on 16 x 64 x 128 (SPNet's insertion point in stage 4 of ResNet-50 for a 512x1024 crop" in text
    assert "769x769" not in text and "x 97" not in text
    assert "Generated by `python scripts/module_table.py --channels 64 --attention-channels 16 --no-latency " in text
    rows = module_table.head_rows(64, (64, 128), 19, repeats=0, warmup=0)
    fcn = rows["fcn"]["flops"]
    assert f"| fcn | {rows['fcn']['parameters']:,} | {fcn / 1e9:,.1f} | - |" in text
    assert fcn == 2 * 64 * 16 * 9 * 64 * 128 + 2 * 16 * 19 * 64 * 128  # the FLOPs are those of the 64 x 128 feature


@pytest.mark.parametrize("crop", [(769, 769), (512, 1024), (65, 81), (100, 75)])
def test_module_table_feature_size_is_the_backbone_output(crop):
    with torch.device("meta"):
        backbone = ResNet(50, output_stride=8)  # the SPNet backbone, shapes only
        c4 = backbone(torch.zeros(1, 3, *crop))[-1]
    assert tuple(c4.shape[-2:]) == module_table.feature_size(crop)
    assert module_table.feature_size((769, 769)) == (97, 97)


@pytest.mark.parametrize(
    "script, argv, message",
    [
        ("make_synthetic", ["--format", "ade20k", "--out", "x", "--test", "3"], "--test is only written"),
        ("check_dataset", ["--dataset", "cityscapes", "--root", "x", "--max-images", "0"], "--max-images must be at"),
        ("convert_checkpoint", ["--format", "official-spnet", "--input", "a.pth", "--output", "a.pth"], "must differ"),
        ("prepare_cityscapes", ["--root", "x", "--workers", "0"], "--workers must be at least 1"),
        ("run_study", ["--jobs", "0"], "--jobs must be at least 1"),
        ("paper_tables", [], "choose --table NAME"),
        ("make_synthetic", ["--format", "cityscapes", "--out", "x", "--train", "-2"], "--train must be 0 or more"),
        ("make_synthetic", ["--format", "folder", "--out", "x", "--val", "-1"], "--val must be 0 or more"),
        ("make_synthetic", ["--format", "folder", "--out", "x", "--size", "0", "8"], "--size H W must be at least 1"),
        ("model_info", ["--config", "c.yaml", "--size", "0", "0"], "--size H W must be at least 1 pixel"),
        ("model_info", ["--config", "c.yaml", "--memory", "--batch", "0"], "--batch must be at least 1, got 0"),
        ("module_table", ["--size", "0", "5"], "--size H W must be at least 1 pixel"),
        ("benchmark", ["--config", "c.yaml", "--size", "8", "-1"], "--size H W must be at least 1 pixel"),
        ("benchmark", ["--config", "c.yaml", "--batch", "0"], "--batch must be at least 1, got 0"),
        ("benchmark", ["--config", "c.yaml", "--iters", "0"], "--iters must be at least 1, got 0"),
        ("benchmark", ["--config", "c.yaml", "--warmup", "0"], "--warmup must be at least 1, got 0"),
        ("benchmark", ["--config", "c.yaml", "--window-batch", "0"], "--window-batch must be at least 1, got 0"),
    ],
)
def test_scripts_reject_arguments_argparse_cannot_check(script, argv, message, capsys):
    """Checked in ``parse_args``, so a documented command that would be refused fails test_docs_commands."""
    module = __import__(script)
    with pytest.raises(SystemExit) as exit_:
        module.parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


ENTRY_POINTS = ["train", "eval", *sorted(p.stem for p in (ROOT / "scripts").glob("[!_]*.py"))]


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_a_wrong_flag_is_one_error_line(script, capsys):
    """argparse's own error printed the whole usage block above the message (utils.cli.ArgumentParser)."""
    module = __import__(script)
    with pytest.raises(SystemExit) as exit_:
        module.parse_args(["--no-such-flag"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and err.endswith(" (see --help)\n"), err  # a missing required flag, or this one


def test_make_synthetic_folder_hint_pastes_into_a_shell(tmp_path, capsys):
    """The printed command, split as a shell would, loads a config that reads the written dataset."""
    import make_synthetic

    out = tmp_path / "my data"  # a space: the root must be quoted too
    make_synthetic.main(["--format", "folder", "--out", str(out), "--train", "1", "--val", "1", "--size", "32", "48"])
    line = capsys.readouterr().out.splitlines()[-1]
    words = shlex.split(line.removeprefix("train on it: "))
    assert words[:4] == ["python", "train.py", "--config", "configs/custom_folder.yaml"]
    cfg = load_config(ROOT / words[3], words[4:])
    assert cfg.data.root == str(out) and cfg.data.dataset_args["classes"] == list(WORLD_CLASSES)
    assert cfg.model.num_classes == len(WORLD_CLASSES) and len(build_dataset(cfg, "val")) == 1


INLINE_COMMAND = re.compile(r"`python (scripts/\w+\.py)([^`]*)`")


def test_concrete_inline_commands_in_the_docs_parse():
    """Commands quoted inline in the docs (test_docs_commands checks ```bash blocks) use flags that exist:
    docs/modules.md showed benchmark.py --compare-fuse long after the flag became --versus. Templates
    with placeholders (H W, CFG, ...) are left out."""
    checked = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for script, rest in INLINE_COMMAND.findall(doc.read_text()):
            words = shlex.split(rest)
            if any(word.isupper() or "..." in word for word in words):
                continue
            module = __import__(Path(script).stem)
            module.parse_args(words)  # SystemExit(2) on an unknown flag
            checked.append(f"{doc.name}: {script}")
    assert "modules.md: scripts/benchmark.py" in checked
