"""scripts/gpu_check.py up to where it needs CUDA: its --dry-run runs every check it can on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import gpu_check  # noqa: E402


def _checks_covered(rows: list[dict]) -> set[str]:
    """Check names of the rows: ``official_train/exact`` and ``official_train_2`` are rows of official_train."""
    return {row["check"].split("/")[0].removesuffix("_2") for row in rows}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_in_one_line():
    result = subprocess.run(
        [sys.executable, "scripts/gpu_check.py"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: no CUDA GPU here") and "--dry-run" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_the_in_process_checks_on_the_cpu(tmp_path, capsys):
    """Fast paths and checkpointing against their references, DDP with gloo: passed, printed, written."""
    out = tmp_path / "gpu_check.json"
    names = ["strip_fast_paths", "checkpointing_exact", "ddp_1_process"]
    assert gpu_check.main(["--dry-run", "--only", *names, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["dry_run"] is True and result["device"].startswith("cpu")
    assert [(row["check"], row["status"]) for row in result["rows"]] == [(name, "passed") for name in names]
    assert "num_batches_tracked [1]" in result["rows"][1]["detail"]
    printed = capsys.readouterr().out
    table = printed[printed.index("check ") :]
    assert all(name in table for name in names) and "img/s" in table and "peak GiB" in table


def test_a_check_that_breaks_fails_alone_and_the_budget_skips_the_rest(monkeypatch, tmp_path):
    def broken(ctx):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\n(the last line)")

    def fine(ctx):
        return [gpu_check.Row("fine", "passed", 10.0, 1.5, detail="ok")]

    monkeypatch.setattr(gpu_check, "CHECKS", {"broken": broken, "fine": fine})
    ctx = gpu_check.Context(True, torch.device("cpu"), tmp_path, None, deadline=float("inf"), gpus=0)
    rows = gpu_check.run_checks(["broken", "fine"], ctx, report=lambda row: None)
    assert [(r.check, r.status) for r in rows] == [("broken", "failed"), ("fine", "passed")]
    assert rows[0].detail == "RuntimeError: (the last line)" and rows[1].seconds is not None
    ctx.deadline = 0.0
    rows = gpu_check.run_checks(["fine"], ctx, report=lambda row: None)
    assert rows[0].status == "skipped" and "time budget" in rows[0].detail


def test_the_official_rows_need_the_official_code(tmp_path):
    ctx = gpu_check.Context(True, torch.device("cpu"), tmp_path, None, deadline=float("inf"), gpus=0)
    (row,) = gpu_check.check_official(ctx, "official_train")
    assert row.status == "skipped" and "--official /path/to/SPNet" in row.detail
    with pytest.raises(FileNotFoundError, match="no models/spnet.py there"):
        gpu_check.main(["--dry-run", "--official", str(tmp_path), "--out", str(tmp_path / "r.json")])


@pytest.mark.slow
def test_the_dry_run_covers_every_check(tmp_path):
    """The whole --dry-run, with the stand-in for the official code (tests/fake_official): every check has a
    row in the table and the JSON, none fails; compiling is skipped, fp16 is bf16, and what only CUDA can run
    says so. Several minutes on 2 CPU cores (train.py, eval.py, torchrun, the benchmarks, compare_official.py)."""
    out = tmp_path / "gpu_check.json"
    command = [sys.executable, "scripts/gpu_check.py", "--dry-run", "--official", "tests/fake_official"]
    command += ["--out", str(out), "--budget", "3000"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert _checks_covered(rows) == set(gpu_check.CHECKS)
    status = {row["check"]: row["status"] for row in rows}
    assert "failed" not in status.values(), rows
    assert status["train_compile"] == "skipped" and status["official_train_2"] == "needs CUDA"
    assert status["ddp_2_processes"] == status["resume_exact"] == status["eval_fp16"] == "passed"
    assert {"official_train/official", "official_train/exact", "official_inference/bf16"} <= set(status)
    speed = {row["check"]: row for row in rows if row["check"] in gpu_check.SPEED and row["status"] == "passed"}
    assert len(speed) == len(gpu_check.SPEED) - 1
    assert all(row["images_per_second"] > 0 and row["peak_memory_gib"] > 0 for row in speed.values())
    table = result.stdout[result.stdout.rindex("check ") :]
    assert all(row["check"] in table for row in rows)


def test_an_fp32_side_far_from_the_official_logits_fails(monkeypatch, tmp_path):
    """compare_official's rows: fp32 sides are held to rounding, bf16 / fp16 sides only reported."""
    side = {"seconds": 0.5, "ratio_to_official": 1.0, "images_per_second": 4.0, "peak_memory_gib": 1.0}
    report = {"batch": 2, "size": [64, 64], "mode": "train", "max_abs_official_logit": 20.0, "sides": {
        "official": {**side, "max_abs_logit_difference_to_official": 0.0, "precision": "fp32"},
        "exact": {**side, "max_abs_logit_difference_to_official": 0.25, "precision": "fp32"},
        "plain": {**side, "max_abs_logit_difference_to_official": 0.15, "precision": "fp32"},
        "bf16": {**side, "max_abs_logit_difference_to_official": 3.0, "precision": "torch.bfloat16"},
    }}  # fmt: skip
    seen = {}

    def fake_python(ctx, args, env=None, module=None):
        seen["env"] = env
        return "compare_official's progress\n" + json.dumps(report)

    monkeypatch.setattr(gpu_check, "_python", fake_python)
    ctx = gpu_check.Context(False, torch.device("cpu"), tmp_path, "official", deadline=float("inf"), gpus=1)
    rows = gpu_check._official_rows(ctx, "official_train", [])
    status = {row.check: row.status for row in rows}
    assert status == {"official_train/official": "passed", "official_train/exact": "failed",
                      "official_train/plain": "passed", "official_train/bf16": "passed"}  # fmt: skip
    assert "at most 2.0e-01" in rows[1].detail and "not compared" in rows[3].detail
    assert seen["env"] == {"NVIDIA_TF32_OVERRIDE": "0"}
