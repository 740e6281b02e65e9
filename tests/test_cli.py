"""Every command-line tool, run as a user runs it: a user error is one ``error:`` line and exit code 2,
``--debug`` shows the traceback, and config overrides are accepted anywhere on the line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

DEMO = "configs/demo.yaml"
USER_ERRORS = {  # command -> what the one line must say
    "train.py --config configs/nowhere.yaml": "config file not found: ",
    "train.py --config configs/demo.yaml train.max_iter=5": "unknown key 'train.max_iter'; did you mean 'max_iters'?",
    "train.py --config configs/demo.yaml train.max_iters=0": "train.max_iters = 0 must be >= 1",
    # a work dir of its own: the repository's work_dirs/demo may hold the README demo's run (then refused)
    "train.py --config configs/demo.yaml train.work_dir=/nonexistent/wd data.root=/nonexistent/cs": (
        "folder not found: /nonexistent/cs"
    ),
    "eval.py --config configs/demo.yaml --checkpoint /nonexistent/best.pth": "/nonexistent/best.pth",
    "scripts/predict.py --config configs/demo.yaml --checkpoint x.pth --input /nonexistent --output /tmp/o": "--input",
    "scripts/model_info.py --config configs/demo.yaml model.head=pmm": "model.head: unknown name 'pmm'",
    "scripts/benchmark.py --config configs/demo.yaml --device cpu eval.amp=fp16": "eval.amp=fp16 is for CUDA",
    "scripts/convert_checkpoint.py --format encoding-resnet --input /nonexistent.pth --output /tmp/x.pth": (
        "/nonexistent.pth"
    ),
    "scripts/check_dataset.py --dataset cityscapes --root /nonexistent": "/nonexistent",
}


def _run(command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command.split()], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # a subprocess per command
@pytest.mark.parametrize("command", sorted(USER_ERRORS), ids=lambda c: c.split()[0] + " " + c.split()[-1][:30])
def test_user_errors_are_one_line(command):
    result = _run(command)
    if command.startswith("scripts/check_dataset.py"):  # the doctor reports problems and exits 1, by design
        assert result.returncode == 1 and USER_ERRORS[command] in result.stdout and "Traceback" not in result.stderr
        return
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and USER_ERRORS[command] in result.stderr, result.stderr


@pytest.mark.slow  # a subprocess per command
def test_debug_shows_the_traceback():
    result = _run("train.py --config configs/demo.yaml train.max_iter=5 --debug")
    assert result.returncode == 1 and "Traceback" in result.stderr and "ConfigError" in result.stderr


@pytest.mark.slow  # a subprocess per command
def test_overrides_are_accepted_anywhere():
    """As users type them: after a flag, between flags, before the config."""
    for command in (
        "train.py --config configs/demo.yaml --print-config train.max_iters=5",
        "train.py train.max_iters=5 --config configs/demo.yaml --print-config",
        "train.py --print-config train.max_iters=5 --config configs/demo.yaml model.num_classes=7",
    ):
        result = _run(command)
        assert result.returncode == 0, result.stderr
        printed = yaml.safe_load(result.stdout)
        assert printed["train"]["max_iters"] == 5
    assert printed["model"]["num_classes"] == 7
    info = _run("scripts/model_info.py --json model.head=ppm --config configs/demo.yaml --size 64 64")
    assert info.returncode == 0, info.stderr
    assert '"input_size": [\n    64,\n    64\n  ]' in info.stdout


def test_a_full_disk_is_one_line_and_other_os_errors_keep_their_traceback(capsys):
    import errno

    from utils.cli import run

    def full(argv):
        raise OSError(errno.ENOSPC, "no space left on work_dirs/demo/iter_0000100.pth; the previous one is intact")

    assert run(full, []) == 2
    assert capsys.readouterr().err == (
        "error: no space left on work_dirs/demo/iter_0000100.pth; the previous one is intact\n"
    )

    def broken(argv):
        raise OSError(errno.EIO, "input/output error")

    with pytest.raises(OSError, match="input/output error"):
        run(broken, [])


def test_an_error_in_a_dataloader_worker_is_its_own_one_line_message(capsys):
    """PyTorch re-raises a worker's exception with the worker's whole traceback as its message."""
    from torch._utils import ExceptionWrapper

    from datasets.base import DatasetError
    from utils.cli import run

    def worker_failed(error: Exception):
        def main(argv):
            try:
                raise error
            except Exception:
                ExceptionWrapper(where="in DataLoader worker process 0").reraise()  # as the DataLoader does

        return main

    assert run(worker_failed(DatasetError("cannot decode image a.png: truncated. Re-download it.")), []) == 2
    assert capsys.readouterr().err == "error: cannot decode image a.png: truncated. Re-download it.\n"
    assert run(worker_failed(FileNotFoundError("label not found: b.png")), []) == 2
    assert capsys.readouterr().err == "error: label not found: b.png\n"
    assert run(worker_failed(ValueError("two lines:\n  the second")), []) == 2
    assert capsys.readouterr().err == "error: two lines:\n  the second\n"

    def main_process(argv):  # a message that merely mentions a worker is left alone
        raise ValueError("Caught nothing in DataLoader worker process 0")

    assert run(main_process, []) == 2
    assert capsys.readouterr().err == "error: Caught nothing in DataLoader worker process 0\n"


@pytest.mark.slow  # a subprocess per command
def test_train_exits_at_once_on_an_error_in_a_dataloader_worker(synthetic_cityscapes, tmp_path):
    """Was: the error printed, then a hang forever (the workers, which ignore SIGTERM, were left to
    Python's exit, where multiprocessing SIGTERMs them and waits)."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_cityscapes, root)
    for image in (root / "leftImg8bit" / "val").rglob("*.png"):
        image.write_bytes(image.read_bytes()[:2000])  # truncated: a copy killed half-way
    command = [
        sys.executable, "train.py", "--config", DEMO, f"data.root={root}", "data.train_split=val",
        f"train.work_dir={tmp_path / 'run'}", "model.backbone.base_width=8", "data.augment.crop_size=[64, 64]",
        "train.batch_size=2", "train.max_iters=2", "train.num_workers=1",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: cannot decode image "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "DataLoader worker" not in result.stderr
