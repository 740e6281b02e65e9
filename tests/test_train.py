"""train.py end to end on the synthetic dataset (CPU): learning, exact resume, SIGTERM, DDP, failures."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from conftest import ROOT

pytestmark = pytest.mark.slow

TINY = [  # a small SPNet (same structure) on 64x128 synthetic images
    "model.backbone.depth=50",
    "model.backbone.stage_blocks=[1, 1, 1, 2]",
    "model.backbone.base_width=8",
    "model.backbone.multi_grid=[1, 2]",
    "data.augment.crop_size=[64, 128]",
    "data.augment.scale_range=[0.75, 1.25]",
    "train.batch_size=4",
    "train.num_workers=0",
    "train.log_interval=1",
    "train.eval_max_images=2",
    "train.eval_pictures=2",
    "train.deterministic=true",
    "optim.lr=0.01",
]


def _run(root: Path, work_dir: Path, *extra: str) -> int:
    return train.main(
        ["--config", str(ROOT / "configs/demo.yaml"), f"data.root={root}", f"train.work_dir={work_dir}", *TINY, *extra]
    )


def _losses(work_dir: Path) -> list[float]:
    return [float(m) for m in re.findall(r"iter \d+/\d+ loss ([\d.]+)", (work_dir / "train.log").read_text())]


def test_short_run_learns_and_writes_its_outputs(synthetic_cityscapes, tmp_path):
    work_dir = tmp_path / "run"
    args = ["train.max_iters=60", "train.checkpoint_interval=30", "train.eval_interval=30"]
    assert _run(synthetic_cityscapes, work_dir, *args) == 0
    losses = _losses(work_dir)
    assert len(losses) == 60
    # measured: 3.1 -> 1.3 (chance level: ln 19 = 2.94 for the main output, plus 0.4 x the aux loss)
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10
    state = torch.load(work_dir / "last.pth", weights_only=True)
    assert state["iter"] == 60 and (work_dir / "iter_0000030.pth").is_file() and (work_dir / "best.pth").is_file()
    assert any((work_dir / "tb").glob("events.out.tfevents.*"))
    assert (work_dir / "val_predictions.png").is_file() and (work_dir / "val_metrics.json").is_file()
    from utils.config import load_config

    assert load_config(work_dir / "config.yaml").train.max_iters == 60  # the resolved config is saved


def test_resume_is_exact(synthetic_cityscapes, tmp_path):
    """6 iterations in one go == 3 iterations, stop (resume from the iteration-3 checkpoint), 3 more.

    With dropout, random augmentation, BatchNorm statistics and 2 loader workers in play.
    """
    common = ["train.max_iters=6", "train.checkpoint_interval=3", "train.eval_interval=0", "train.num_workers=2"]
    assert _run(synthetic_cityscapes, tmp_path / "full", *common) == 0
    assert (
        train.main(
            [
                "--config",
                str(ROOT / "configs/demo.yaml"),
                "--resume",
                str(tmp_path / "full" / "iter_0000003.pth"),
                f"data.root={synthetic_cityscapes}",
                f"train.work_dir={tmp_path / 'resumed'}",
                *TINY,
                *common,
            ]
        )
        == 0
    )
    full = torch.load(tmp_path / "full" / "last.pth", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "last.pth", weights_only=True)
    assert resumed["iter"] == full["iter"] == 6
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    momentum = [s["momentum_buffer"] for s in full["optimizer"]["state"].values()]
    resumed_momentum = [s["momentum_buffer"] for s in resumed["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, resumed_momentum))
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "full")[3:]


def test_sigterm_saves_a_checkpoint_that_resumes(synthetic_cityscapes, tmp_path):
    work_dir = tmp_path / "preempted"
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "--config",
        str(ROOT / "configs/demo.yaml"),
        f"data.root={synthetic_cityscapes}",
        f"train.work_dir={work_dir}",
        *TINY,
        "train.max_iters=100000",
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and len(_losses(work_dir) if (work_dir / "train.log").exists() else []) < 2:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM  # "preempted", for job scripts to requeue
    state = torch.load(work_dir / "last.pth", weights_only=True)
    done = state["iter"]
    assert 2 <= done < 100000 and "stop requested" in (work_dir / "train.log").read_text()
    shorter = [f"train.max_iters={done + 2}", "--resume", "auto", "--allow-config-change"]  # a new schedule length
    assert _run(synthetic_cityscapes, work_dir, *shorter) == 0
    assert torch.load(work_dir / "last.pth", weights_only=True)["iter"] == done + 2
    assert f"resumed from {work_dir / 'last.pth'} at iteration {done}" in (work_dir / "train.log").read_text()


GN = [
    "train.amp=none",  # the demo trains in bf16; equality across process layouts is an fp32 claim
    "model.norm=gn",
    "model.norm_groups=4",
    "model.head_args.sp.dropout=0.0",
    "model.aux_head_args.fcn.dropout=0.0",
    "train.max_iters=4",
    "train.eval_interval=0",
    "train.checkpoint_interval=100",
]


def test_ddp_two_processes_match_one_process(synthetic_cityscapes, tmp_path):
    """2 processes x 2 images (gloo, torchrun) == 1 process x 4 images == 1 process x 2 images x 2 accumulation."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "train.py"),
        "--config",
        str(ROOT / "configs/demo.yaml"),
        f"data.root={synthetic_cityscapes}",
        f"train.work_dir={tmp_path / 'ddp'}",
        *TINY,
        *GN,
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 process(es)" in (tmp_path / "ddp" / "train.log").read_text()
    assert _run(synthetic_cityscapes, tmp_path / "single", *GN) == 0
    assert _run(synthetic_cityscapes, tmp_path / "accum", *GN, "train.per_device_batch=2") == 0
    ddp = torch.load(tmp_path / "ddp" / "last.pth", weights_only=True)["model"]
    for other in ("single", "accum"):
        weights = torch.load(tmp_path / other / "last.pth", weights_only=True)["model"]
        for key, value in ddp.items():
            # float rounding differs (sums over 2 processes): measured up to 3e-5 after 4 iterations
            torch.testing.assert_close(value, weights[key], rtol=1e-4, atol=1e-4, msg=f"{other}: {key}")
    assert _losses(tmp_path / "ddp") == pytest.approx(_losses(tmp_path / "single"), rel=1e-4)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(synthetic_cityscapes, tmp_path):
    work_dir = tmp_path / "diverged"
    code = _run(
        synthetic_cityscapes,
        work_dir,
        "optim.lr=1e12",
        "train.max_iters=50",
        "train.checkpoint_interval=1",
        "train.eval_interval=0",
    )
    assert code == 1
    log = (work_dir / "train.log").read_text()
    failed = int(re.search(r"non-finite loss \S+ at iteration (\d+)", log).group(1))
    state = torch.load(work_dir / "last.pth", weights_only=True)
    assert state["iter"] == failed - 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_batch_plan_and_bad_resume(tmp_path):
    from engine.data import plan_batches

    assert plan_batches(8, 4, None) == (2, 1)
    assert plan_batches(8, 1, 2) == (2, 4)
    with pytest.raises(ValueError, match="cannot be split into 3 processes"):
        plan_batches(8, 3, None)
    torch.save({"model": {}}, tmp_path / "weights.pth")
    from utils.checkpoint import read_training_checkpoint

    with pytest.raises(ValueError, match="is not a training checkpoint .* use train.load_from="):
        read_training_checkpoint(tmp_path / "weights.pth")


def test_work_dir_follows_the_config_path():
    from engine.run_dir import work_dir_of
    from utils.config import load_config

    cfg = load_config(ROOT / "configs/ade20k/ablations/r50_mpm1.yaml")
    assert work_dir_of(cfg, str(ROOT / "configs/ade20k/ablations/r50_mpm1.yaml")) == Path(
        "work_dirs/ade20k/ablations/r50_mpm1"
    )


def test_slurm_script_builds_a_multi_node_torchrun(tmp_path):
    fake = tmp_path / "scontrol"
    fake.write_text("#!/bin/sh\nprintf 'gpu-node-07\\ngpu-node-08\\n'\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "DRY_RUN": "1", "SLURM_JOB_ID": "123456",
           "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu-node-[07-08]", "SLURM_GPUS_ON_NODE": "4",
           "SLURM_SUBMIT_DIR": "/scratch/jobs"}  # fmt: skip
    command = subprocess.run(
        ["bash", str(ROOT / "scripts/slurm_train.sh"), "configs/cityscapes/spnet_r101.yaml", "train.amp=fp16"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "torchrun --nnodes=2 --nproc_per_node=4 --shutdown-timeout=120 --rdzv-id=123456" in command
    assert "--rdzv-endpoint=gpu-node-07:23456" in command  # 20000 + job id % 20000: no fixed port
    assert command.strip().endswith(
        "train.py --config configs/cityscapes/spnet_r101.yaml --resume auto "
        "--stop-file /scratch/jobs/slurm-123456.stop train.amp=fp16"
    )


def test_epochs_set_the_number_of_iterations(synthetic_cityscapes, tmp_path):
    """6 images, batch 4 as the recipe's 4 GPUs x 1 image (here: 4 accumulation steps). The official
    loader gives each GPU ceil(6 / 4) = 2 images, so an epoch is 2 iterations (not 6 // 4 = 1)."""
    work_dir = tmp_path / "epochs"
    args = ["train.epochs=1.5", "train.per_device_batch=1", "train.eval_interval=0", "train.eval_max_images=1"]
    assert _run(synthetic_cityscapes, work_dir, *args) == 0
    log = (work_dir / "train.log").read_text()
    assert "(2 iteration(s) per epoch)" in log and "; 3 iteration(s)" in log
    assert torch.load(work_dir / "last.pth", weights_only=True)["iter"] == 3


def test_bf16_autocast_and_channels_last_train(synthetic_cityscapes, tmp_path):
    work_dir = tmp_path / "bf16"
    extra = [
        "train.amp=bf16",
        "train.fast.channels_last=true",
        "train.max_iters=3",
        "train.eval_interval=0",
        "train.eval_max_images=1",
    ]
    assert _run(synthetic_cityscapes, work_dir, *extra) == 0
    losses = _losses(work_dir)
    assert len(losses) == 3 and all(0 < loss < 10 for loss in losses)
    state = torch.load(work_dir / "last.pth", weights_only=True)["model"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())  # autocast, not casting


def test_torch_compile_trains_and_saves_plain_weights(synthetic_cityscapes, tmp_path):
    """Compiling takes about two minutes on 2 CPU cores; the checkpoint holds the uncompiled module's keys."""
    from models import build_model
    from utils.config import load_config

    work_dir = tmp_path / "compiled"
    assert (
        _run(
            synthetic_cityscapes,
            work_dir,
            "train.compile=true",
            "train.max_iters=2",
            "train.eval_interval=0",
            "train.eval_max_images=1",
        )
        == 0
    )
    state = torch.load(work_dir / "last.pth", weights_only=True)["model"]
    model = build_model(load_config(work_dir / "config.yaml"), load_pretrained=False)
    model.load_state_dict(state)  # strict: no "_orig_mod." prefixes


def test_the_log_and_tensorboard_show_the_lr_each_iteration_trained_with(synthetic_cityscapes, tmp_path):
    """Was: the rate after scheduler.step(), the next iteration's (the last line always said 0)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work_dir = tmp_path / "lr"
    args = ["train.max_iters=3", "optim.warmup_iters=0", "optim.power=0.9", "train.eval_interval=0",
            "train.eval_max_images=1"]  # fmt: skip
    assert _run(synthetic_cityscapes, work_dir, *args) == 0
    expected = [0.01, 0.01 * (2 / 3) ** 0.9, 0.01 * (1 / 3) ** 0.9]  # lr (1 - it / max_iters) ** power, it = 0, 1, 2
    logged = [float(m) for m in re.findall(r"iter \d+/3 .* lr (\S+) ", (work_dir / "train.log").read_text())]
    assert logged == pytest.approx(expected, rel=1e-3)  # printed with 4 digits
    events = EventAccumulator(str(work_dir / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/lr")] == [
        (i + 1, pytest.approx(lr, rel=1e-6)) for i, lr in enumerate(expected)
    ]
    (image,) = events.Images("val/confusion_matrix")  # the final validation's heatmap: 19 rows of 36 pixels
    assert image.step == 3 and 19 * 36 < image.width < image.height


def test_a_complete_run_reports_the_best_miou_of_best_pth(synthetic_cityscapes, tmp_path, capsys):
    """Was: the best mIoU of last.pth, which is saved before the final validation (-100.00%)."""
    work_dir = tmp_path / "done"
    args = ["train.max_iters=2", "train.eval_interval=0", "train.eval_max_images=1"]
    assert _run(synthetic_cityscapes, work_dir, *args) == 0
    best = torch.load(work_dir / "best.pth", weights_only=True)["miou"]
    assert torch.load(work_dir / "last.pth", weights_only=True)["best_miou"] == -1.0  # saved before validating
    capsys.readouterr()
    assert _run(synthetic_cityscapes, work_dir, *args, "--resume", "auto") == 0
    out = capsys.readouterr().out
    assert f"the run is complete (iteration 2 of 2; final mIoU {100 * best:.2f}%, best {100 * best:.2f}% in " in out


def test_training_writes_strict_json_and_the_protocol_and_a_finished_run_is_left_alone(
    synthetic_cityscapes, tmp_path, monkeypatch
):
    work_dir = tmp_path / "run"
    args = [
        "--config", str(ROOT / "configs/demo.yaml"), f"data.root={synthetic_cityscapes}", f"train.work_dir={work_dir}",
        "model.backbone.depth=50", "model.backbone.stage_blocks=[1, 1, 1, 2]", "model.backbone.base_width=8",
        "model.backbone.multi_grid=[1, 2]", "data.augment.crop_size=[64, 128]", "train.batch_size=2",
        "train.num_workers=0", "train.max_iters=2", "train.eval_max_images=2", "train.log_interval=1",
    ]  # fmt: skip
    titles = []
    real_panel = train.prediction_panel
    monkeypatch.setattr(train, "prediction_panel", lambda *a: titles.append(a[-1]) or real_panel(*a))
    assert train.main(args) == 0
    metrics_text = (work_dir / "val_metrics.json").read_text()
    metrics = json.loads(metrics_text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert (
        metrics["iter"] == 2
        and metrics["protocol"] == "spnet rules, whole image, image at its own size, scales 1, no flip"
    )
    assert None in metrics["iou"]  # the synthetic world lacks 8 of the 19 classes: their IoU is undefined
    log = (work_dir / "train.log").read_text()
    assert "validation protocol (train.eval_protocol=whole): spnet rules, whole image" in log
    # the picture says which run, iteration and mIoU it shows; the log says the fast paths in words
    assert titles == [f"{work_dir}, iteration 2 of 2: mIoU {metrics['miou']:.2%}"]
    assert "fast paths: all on; channels_last True" in log and "FastPaths(" not in log
    # the demo's 20 warm-up iterations cover this 2-iteration run: said, not silent
    assert "optim.warmup_iters=20 covers the whole run of 2 iteration(s): the LR never reaches optim.lr" in log
    assert (
        metrics["miou_definition"].startswith("mean IoU over the ")
        and "of 19 classes present" in (metrics["miou_definition"])
    )
    assert re.search(r"validation at iteration 2 .*\n\s*protocol: spnet rules, whole image", log)
    # beside it, the per-image counts of the same validation (scripts/compare_runs.py)
    from datasets import Cityscapes
    from utils.records import load_records

    records = load_records(work_dir / "val_records.npz")
    first_two = [Cityscapes(synthetic_cityscapes, "val").name(i) for i in range(2)]
    assert records.names.tolist() == first_two and records.protocol == "spnet_whole_s1_noflip"
    assert records.miou() == pytest.approx(metrics["miou"], abs=1e-12)

    # --resume auto on the finished run: says so, changes nothing
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in work_dir.rglob("*")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args, "--resume", "auto"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "the run is complete (iteration 2 of 2; final mIoU" in result.stdout
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in work_dir.rglob("*")} == before

    # killed during the final validation (val_metrics.json of the last iteration never written): the
    # resumed run owes that validation and runs only it
    (work_dir / "val_metrics.json").unlink()
    assert train.main([*args, "--resume", "auto"]) == 0
    assert json.loads((work_dir / "val_metrics.json").read_text())["iter"] == 2
    assert (work_dir / "train.log").read_text().count("validation at iteration 2") == 2


def test_an_image_over_the_pixel_limit_is_one_error_line_from_a_dataloader_worker(
    synthetic_cityscapes, tmp_path, capsys
):
    """Was: Pillow's DecompressionBombError, a traceback without the file name; the limit is data.max_image_pixels."""
    from utils.cli import run

    # data.check_masks=false: else the masks, over the limit too, stop the run before the loaders start
    args = ["--config", str(ROOT / "configs/demo.yaml"), f"data.root={synthetic_cityscapes}", *TINY,
            f"train.work_dir={tmp_path / 'run'}", "train.num_workers=2", "data.max_image_pixels=8000",
            "data.check_masks=false"]  # fmt: skip
    assert run(train.main, args) == 2
    err = capsys.readouterr().err  # the log's lines, then the error
    assert "Traceback" not in err and re.fullmatch(
        rf"(.*\n)*error: image {re.escape(str(synthetic_cityscapes))}/leftImg8bit/train/\w+/\w+\.png is 128x64 = 8,192 "
        r"pixels, over the limit of 8,000 \(set by data.max_image_pixels\); if you trust the file, raise the limit: "
        r"data.max_image_pixels=8192\n",
        err,
    ), err


def test_without_pictures_the_last_line_names_no_picture(synthetic_cityscapes, tmp_path):
    """train.eval_pictures=0 draws nothing, and the final line does not point at a picture that is not there."""
    work_dir = tmp_path / "run"
    assert _run(synthetic_cityscapes, work_dir, "train.max_iters=2", "train.eval_pictures=0") == 0
    last = (work_dir / "train.log").read_text().strip().splitlines()[-1]
    assert "final mIoU" in last and "val_predictions.png" not in last
    assert not (work_dir / "val_predictions.png").exists() and (work_dir / "val_metrics.json").is_file()
